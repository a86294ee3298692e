-- expect: tests/spec_fail/imagefolder_crop_size.lua:9: ImageFolder.random_crop: size {24, 24} is not the image's {32, 32}: validation images would have another shape (resize to the crop's size instead)
model "Net" {
  inputs = { image = Tensor{3, 32, 32} },
  net = Sequential { Flatten(), Linear(3072, 2) },
  forward = function(m, b) return m.net(b.image) end,
}
train {
  data = ImageFolder { root = "pets", size = 32,
    random_crop = { size = 24, padding = 4 } },
  batch_size = 4,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
