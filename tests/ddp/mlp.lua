-- tests/ddp/mlp.lua — a small MLP on synthetic data for tests/suite_ddp.sh: 2 ranks ×
-- batch 8 against 1 rank × batch 16 (the suite rewrites batch_size, devices, optimizer; train.log: one metric per log_reduce)
model "DdpMLP" {
  inputs = { x = Tensor{32} },
  net = Sequential { Linear(32, 64), ReLU(), Linear(64, 64), Tanh(), Linear(64, 5) },
  forward = function(m, b) return m.net(b.x) end,
}

fabric { accelerator = "cpu", precision = "32-true", strategy = "ddp", devices = 2 }

train {
  data = Synthetic {
    fields = { x = Tensor{32, dist = "normal"}, target = Tensor{dtype = "int64", dist = "randint", high = 5} },
    size = 320, val_size = 64,
  },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = AdamW { lr = 1e-2, weight_decay = 0.01 },
  epochs = 1,
  log = function(m, b, out) return { hits = accuracy(out, b.target), worst = max(abs(out)), total = sum(out) } end,
  log_reduce = { worst = "max", total = "sum" },
  log_every_n_steps = 1,
}
