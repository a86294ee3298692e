-- tests/ops/expand.lua — a model's own Parameter (a class token and a position table, as
-- torchvision's ViT has them), expand and tile (Tensor.repeat) with their backward (the
-- gradient summed over the copies), and randn / rand_like draws (no gradient; the PyTorch
-- reference takes loom's draws: tests/torch/philox.py); tests/suite_ops.sh runs its
-- gradcheck (64-true) and PyTorch parity (32-true).
model "Expand" {
  inputs = { x = Tensor{12} },
  inp = Linear(12, 12),
  cls = Parameter(1, 1, 4),
  pos = Parameter(1, 4, 4),
  gain = Parameter(4),
  out = Linear(16, 3),
  forward = function(m, b)
    local h = reshape(m.inp(b.x), -1, 3, 4)                                 -- (B, 3, 4)
    local x = cat({ expand(m.cls, b.x:size(0), -1, -1), h }, 1) + m.pos     -- (B, 4, 4)
    x = x * expand(m.gain, 4, 4)                                            -- (4) → (4, 4), no batch
    x = x + tile(slice(x, 1, 0, 2), 1, 2, 1)                                -- (B, 2, 4) → (B, 4, 4)
    x = x + slice(x, 2, 1, 3):tile(2) * 0.5 - x:tile(1, 1, 1)               -- fewer repeats than dims: ones in front
    x = x + expand(sum(x, 1, { keepdim = true }), -1, 4, -1) * 0.1         -- (B, 1, 4) → (B, 4, 4)
    x = x + slice(tile(m.cls, b.x:size(0), 4, 1), 2, 0, 4) * 0.3           -- (1, 1, 4) → (B, 4, 4)
    x = x + randn(b.x:size(0), 4, 4) * 0.1 + rand_like(x) * 0.05            -- no gradient
    return m.out(flatten(x, 1))
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{12, dist = "normal"}, target = Tensor{3, dist = "uniform"} }, size = 64 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
