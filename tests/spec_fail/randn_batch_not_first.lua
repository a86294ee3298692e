-- expect: tests/spec_fail/randn_batch_not_first.lua:5: randn: the batch size (x:size(0)) can only be the first size, got (4, B)
model "Net" {
  inputs = Tensor{4},
  lin = Linear(4, 4),
  forward = function(m, x) return m.lin(x) + randn(4, x:size(0)) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{4} }, size = 8 }, batch_size = 4,
  loss = function(m, b) return mse(m(b.x), b.target) end, optimizer = SGD { lr = 0.1 }, epochs = 1,
}
