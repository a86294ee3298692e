-- expect: tests/spec_fail/optimizer_negative_lr.lua:11: AdamW.lr must be a non-negative number, got -0.001
model "Net" {
  inputs = { image = Tensor{1, 28, 28} },
  net = Sequential { Flatten(), Linear(784, 10) },
  forward = function(m, x) return m.net(x.image) end,
}
train {
  data = FashionMNIST {},
  batch_size = 32,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = AdamW { lr = -1e-3 },
  epochs = 1,
}
