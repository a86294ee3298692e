-- expect: tests/spec_fail/optimizer_betas.lua:11: Adam.betas must be a pair of numbers in [0, 1), e.g. {0.9, 0.999}, got {0.9, 1.5}
model "Net" {
  inputs = { image = Tensor{1, 28, 28} },
  net = Sequential { Flatten(), Linear(784, 10) },
  forward = function(m, x) return m.net(x.image) end,
}
train {
  data = FashionMNIST {},
  batch_size = 32,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = Adam { betas = { 0.9, 1.5 } },
  epochs = 1,
}
