-- expect: tests/spec_fail/expand_size_mismatch.lua:5: expand(B, 5): the expanded size (5) must match the existing size (3) at dim 1, or that size must be 1
model "Net" {
  inputs = Tensor{4},
  lin = Linear(4, 3),
  forward = function(m, x) return expand(m.lin(x), x:size(0), 5) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{5} }, size = 8 }, batch_size = 4,
  loss = function(m, b) return mse(m(b.x), b.target) end, optimizer = SGD { lr = 0.1 }, epochs = 1,
}
