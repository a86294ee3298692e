-- expect: tests/spec_fail/early_stopping_npy_no_val.lua:13: EarlyStopping: monitor 'val/acc' needs validation data, but Npy has none (val_split = 0); set val_split, or monitor 'train/loss'
model "Net" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Npy { fields = { x = "x.npy", target = "target.npy" } },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
  callbacks = { EarlyStopping { monitor = "val/acc", mode = "max" } },
}
