-- bench/specs/ddp_mlp.lua — an MLP of 1.9 M parameters (7.6 MB of float32 gradients a
-- step) on synthetic data, 2 ranks × batch 64: what bench/ddp.sh times against PyTorch
-- DDP (gloo) on the same model, batch and optimizer.
model "DdpBenchMLP" {
  inputs = { x = Tensor{784} },
  net = Sequential { Linear(784, 1024), ReLU(), Linear(1024, 1024), ReLU(), Linear(1024, 10) },
  forward = function(m, b) return m.net(b.x) end,
}

fabric { accelerator = "cpu", precision = "32-true", strategy = "ddp", devices = 2 }

train {
  data = Synthetic {
    fields = { x = Tensor{784, dist = "normal"}, target = Tensor{dtype = "int64", dist = "randint", high = 10} },
    size = 25600,
  },
  batch_size = 64,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = AdamW { lr = 1e-3, weight_decay = 0.01 },
  epochs = 1,
}
