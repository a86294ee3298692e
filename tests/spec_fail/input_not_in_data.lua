-- expect: tests/spec_fail/input_not_in_data.lua:3: model input 'img' is not provided by FashionMNIST (it gives: image, label) (did you mean 'image'?)
model "Net" {
  inputs = { img = Tensor{1, 28, 28} },
  net = Sequential { Flatten(), Linear(784, 10) },
  forward = function(m, x) return m.net(x.img) end,
}
train {
  data = FashionMNIST {},
  batch_size = 32,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
