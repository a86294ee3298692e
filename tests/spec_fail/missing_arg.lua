-- expect: tests/spec_fail/missing_arg.lua:4: Linear is missing its required argument 'out_features'
model "Net" {
  inputs = { x = Tensor{16} },
  fc = Linear(16),
  forward = function(m, x) return m.fc(x.x) end,
}
