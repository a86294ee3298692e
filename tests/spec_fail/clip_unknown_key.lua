-- expect: tests/spec_fail/clip_unknown_key.lua:13: train.clip: unknown setting 'max_nrom' (did you mean 'max_norm'?); valid settings: clip_val, max_norm, norm_type
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
  clip = { max_nrom = 1.0 },
}
