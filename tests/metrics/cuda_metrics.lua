-- train.log's metrics on the CUDA program against the CPU program's (tests/suite_metrics.sh
-- under tests/cuda_emu, tests/gpu/run.sh on a GPU): every metric kind (accuracy by argmax
-- and by threshold, abs, max, sum, mean) and log_reduce (mean, sum, max), with
-- accumulate = 2 and a step row every 2 steps, logged to all three loggers
model "Mini" {
  inputs = { image = Tensor{1, 28, 28} },
  body = Sequential { Flatten(), Linear(784, 16), ReLU(), Linear(16, 10) },
  forward = function(m, b) return m.body(b.image) end,
}
train {
  data = FashionMNIST { val_split = 48 },
  batch_size = 16, accumulate = 2, log_every_n_steps = 2, epochs = 2,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  log = function(m, b, out)
    return { hits = accuracy(out, b.label), band = accuracy(out, out, {threshold = 0.25}),
             spread = mean(abs(out)), total = sum(out), worst = max(abs(out)) }
  end,
  log_reduce = { total = "sum", worst = "max" },
  optimizer = Adam { lr = 1e-2 },
  loggers = { CSVLogger { root_dir = "logs" }, TensorBoardLogger { root_dir = "tb" }, MLFlowLogger { experiment_name = "f", save_dir = "mlruns" } },
}
