-- expect: tests/spec_fail/batchnorm_channels.lua:4: BatchNorm2d(32) expects 32 channels (dim 1), gets 16 (input (B, 16, 26, 26))
model "Net" {
  inputs = { image = Tensor{1, 28, 28} },
  body = Sequential { Conv2d(1, 16, 3), BatchNorm2d(32) },
  forward = function(m, x) return m.body(x.image) end,
}
