-- expect: tests/spec_fail/clip_bad.lua:13: train.clip: give exactly one of max_norm (clip by norm) and clip_val (clip by value)
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
  epochs = 1,
  clip = { max_norm = 1.0, clip_val = 0.5 },
}
