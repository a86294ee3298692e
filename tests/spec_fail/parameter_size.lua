-- expect: tests/spec_fail/parameter_size.lua:5: Parameter: size 2 must be a positive integer, got 0.5
model "Net" {
  inputs = Tensor{4},
  lin = Linear(4, 4),
  scale = Parameter(1, 0.5),
  forward = function(m, x) return m.lin(x) * m.scale end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{4} }, size = 8 }, batch_size = 4,
  loss = function(m, b) return mse(m(b.x), b.target) end, optimizer = SGD { lr = 0.1 }, epochs = 1,
}
