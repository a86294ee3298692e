-- expect: tests/spec_fail/loss_not_scalar.lua:11: train.loss must return a scalar tensor (use a reduction), got a tensor (B)
model "Net" {
  inputs = { image = Tensor{1, 28, 28} },
  net = Sequential { Flatten(), Linear(784, 10) },
  forward = function(m, x) return m.net(x.image) end,
}
train {
  data = FashionMNIST {},
  batch_size = 32,
  loss = function(m, b)
    return cross_entropy(m(b), b.label, { reduction = "none" })
  end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
