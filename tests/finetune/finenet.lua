-- tests/suite_finetune.sh's model: a small classifier fine-tuned from a PyTorch
-- state_dict (train.load_raw), with its BatchNorm's affine parameters and its middle
-- Linear frozen (train.freeze): their weight gradients are pruned, the gradient still
-- flows through them to features.0, which trains.  (No bias right before a training-mode
-- BatchNorm: its gradient is zero but for rounding, which Adam would amplify.)
model "FineNet" {
  inputs = { x = Tensor{12} },
  features = Sequential { Linear(12, 16), ReLU(), BatchNorm1d(16), Linear(16, 16), ReLU() },
  head = Linear(16, 4),
  forward = function(m, b) return m.head(m.features(b.x)) end,
}
fabric { accelerator = "cpu" }
train {
  data = Npy { fields = { x = "x.npy", target = "target.npy" } },
  batch_size = 16,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = AdamW { lr = 1e-2, weight_decay = 0.1 },
  freeze = { "^features%.2%.", "^features%.3%." },
  load_raw = "pretrained.safetensors",
  epochs = 5,
  log_every_n_steps = 1,
}
