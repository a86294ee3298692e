-- expect: tests/spec_fail/train_no_loss.lua:7: train: 'loss' is required
model "Net" {
  inputs = { image = Tensor{1, 28, 28} },
  net = Sequential { Flatten(), Linear(784, 10) },
  forward = function(m, x) return m.net(x.image) end,
}
train {
  data = FashionMNIST {},
  batch_size = 32,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
