-- expect: tests/spec_fail/tensor_unknown_setting.lua:3: Tensor: unknown setting 'dtpye' (did you mean 'dtype'?); valid settings: dist, dtype, high, low
model "Net" {
  inputs = { image = Tensor{1, 28, 28, dtpye = "float32"} },
  net = Sequential { Flatten(), Linear(784, 10) },
  forward = function(m, x) return m.net(x.image) end,
}
train {
  data = FashionMNIST {},
  batch_size = 32,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
