-- expect: tests/spec_fail/absurd_no_suggestion.lua:4: unknown name 'Blorp'
model "Net" {
  inputs = Tensor{4},
  layer = Blorp(4, 8),
  forward = function(m, x) return m.layer(x) end,
}
