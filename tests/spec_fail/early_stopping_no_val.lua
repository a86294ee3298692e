-- expect: tests/spec_fail/early_stopping_no_val.lua:13: EarlyStopping: monitor 'val/loss' needs validation data, but Synthetic has none (val_size = 0); set val_size, or monitor 'train/loss'
model "Net" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} }, val_size = 0 },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
  callbacks = { EarlyStopping { monitor = "val/loss" } },
}
