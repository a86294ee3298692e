-- tests/ops/dropout2d.lua — Dropout2d on (N, C, H, W) and (N, C, L): gradient check only
-- (its channel masks are loom's Philox stream, which PyTorch does not reproduce).
model "Drop2d" {
  inputs = { x = Tensor{32} },
  inp = Linear(32, 48),
  drop = Dropout2d(0.3),
  drop1 = Dropout2d(0.5),
  out = Linear(48, 2),
  forward = function(m, b)
    local h = m.drop(reshape(m.inp(b.x), -1, 6, 4, 2))
    local g = m.drop1(reshape(h, -1, 12, 4))
    return m.out(flatten(g, 1))
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{32, dist = "normal"}, target = Tensor{2, dist = "uniform"} }, size = 64 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
