-- expect: tests/spec_fail/no_inputs.lua:2: model "Net" needs inputs, e.g. inputs = { image = Tensor{1, 28, 28} }
model "Net" {
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x) end,
}
