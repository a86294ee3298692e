-- expect: tests/spec_fail/conv_channels.lua:6: Conv2d(32, 64, 3) expects 32 input channels, gets 16 (input (B, 16, 26, 26))
model "Net" {
  inputs = { image = Tensor{1, 28, 28} },
  body = Sequential {
    Conv2d(1, 16, 3), ReLU(),
    Conv2d(32, 64, 3),
  },
  forward = function(m, x) return m.body(x.image) end,
}
