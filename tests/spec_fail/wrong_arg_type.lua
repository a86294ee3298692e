-- expect: tests/spec_fail/wrong_arg_type.lua:4: Linear: in_features must be a positive integer, got '16'
model "Net" {
  inputs = { x = Tensor{16} },
  fc = Linear("16", 4),
  forward = function(m, x) return m.fc(x.x) end,
}
