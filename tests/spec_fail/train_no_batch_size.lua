-- expect: tests/spec_fail/train_no_batch_size.lua:7: train: 'batch_size' is required
model "Net" {
  inputs = { image = Tensor{1, 28, 28} },
  net = Sequential { Flatten(), Linear(784, 10) },
  forward = function(m, x) return m.net(x.image) end,
}
train {
  data = FashionMNIST {},
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
