-- bench/specs/linear.lua — a single Linear(10, 2) at batch 4: the smallest training
-- step there is, so what it measures is per-step overhead (fork/join, dispatch,
-- optimizer bookkeeping), not arithmetic.  Synthetic data; bench/speed.sh times its step,
-- bench/overhead.sh the whole program (65536 samples: 16384 steps an epoch, so the
-- epoch's end, its checkpoint and log rows, weigh as they would in a real run).
model "TinyLinear" {
  inputs = { x = Tensor{10} },
  fc = Linear(10, 2),
  forward = function(m, b) return m.fc(b.x) end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic {
    fields = {
      x = Tensor{10, dist = "uniform"},
      target = Tensor{2, dist = "uniform"},
    },
    size = 65536,
  },
  batch_size = 4,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = AdamW { lr = 1e-3, weight_decay = 0.01 },
  epochs = 1,
}
