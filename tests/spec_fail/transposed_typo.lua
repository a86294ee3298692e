-- expect: tests/spec_fail/transposed_typo.lua:4: unknown name 'Lienar' (did you mean 'Linear'?)
model "Net" {
  inputs = Tensor{4},
  layer = Lienar(4, 8),
  forward = function(m, x) return m.layer(x) end,
}
