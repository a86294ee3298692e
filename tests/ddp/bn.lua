-- tests/ddp/bn.lua — a small CNN with BatchNorm2d and a BatchNorm1d MLP head on synthetic
-- images, for tests/suite_ddp.sh's sync_batchnorm: 2 ranks × batch 4 against 1 rank ×
-- batch 8 (the suite rewrites batch_size, devices, sync_batchnorm, precision)
model "DdpBN" {
  inputs = { x = Tensor{2, 6, 6} },
  net = Sequential {
    Conv2d(2, 4, 3, {padding = "same"}), BatchNorm2d(4), ReLU(), MaxPool2d(2),   -- 4×3×3
    Flatten(), Linear(36, 16), BatchNorm1d(16, {momentum = 0.3}), Tanh(), Linear(16, 3),
  },
  forward = function(m, b) return m.net(b.x) end,
}

fabric { accelerator = "cpu", precision = "32-true", strategy = "ddp", devices = 2, sync_batchnorm = true }

train {
  data = Synthetic {
    fields = { x = Tensor{2, 6, 6, dist = "normal"}, target = Tensor{dtype = "int64", dist = "randint", high = 3} },
    size = 48, val_size = 16,
  },
  batch_size = 4,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = SGD { lr = 0.1, momentum = 0.9 },
  epochs = 1,
}
