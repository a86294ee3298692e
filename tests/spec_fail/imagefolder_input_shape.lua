-- expect: tests/spec_fail/imagefolder_input_shape.lua:3: model input 'image' is declared float (3, 32, 32) but ImageFolder gives float (1, 32, 32)
model "Net" {
  inputs = { image = Tensor{3, 32, 32} },
  net = Sequential { Flatten(), Linear(3072, 2) },
  forward = function(m, b) return m.net(b.image) end,
}
train {
  data = ImageFolder { root = "pets", size = 32, channels = 1 },
  batch_size = 4,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
