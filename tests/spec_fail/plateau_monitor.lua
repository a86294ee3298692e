-- expect: tests/spec_fail/plateau_monitor.lua:13: ReduceLROnPlateau: cannot monitor 'val_loss'; the program logs train/loss, val/loss, val/acc (did you mean 'val/loss'?)
model "Net" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} } },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
  scheduler = ReduceLROnPlateau { monitor = "val_loss" },
}
