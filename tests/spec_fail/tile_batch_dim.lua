-- expect: tests/spec_fail/tile_batch_dim.lua:5: tile(B, 1): repeating dim 0 of size B by the batch size: only a dim of size 1 can be
model "Net" {
  inputs = Tensor{4},
  lin = Linear(4, 4),
  forward = function(m, x) return tile(m.lin(x), x:size(0), 1) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{4} }, size = 8 }, batch_size = 4,
  loss = function(m, b) return mse(m(b.x), b.target) end, optimizer = SGD { lr = 0.1 }, epochs = 1,
}
