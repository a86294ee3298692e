-- expect: tests/spec_fail/train_unknown_key.lua:12: train: unknown setting 'epoch' (did you mean 'epochs'?); valid settings: accumulate, batch_size, callbacks, clip, data, epochs, freeze, hooks, init, load_raw, log, log_every_n_steps, log_reduce, loggers, loss, max_steps, num_workers, optimizer, optimizers, scheduler, seed, training_step, val_every
model "Net" {
  inputs = { image = Tensor{1, 28, 28} },
  net = Sequential { Flatten(), Linear(784, 10) },
  forward = function(m, x) return m.net(x.image) end,
}
train {
  data = FashionMNIST {},
  batch_size = 32,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = SGD { lr = 0.1 },
  epoch = 1,
}
