-- expect: tests/spec_fail/padding_same_stride.lua:4: Conv2d(1, 8, 3): padding='same' is not supported for strided convolutions
model "Net" {
  inputs = { image = Tensor{1, 28, 28} },
  conv = Conv2d(1, 8, 3, { stride = 2, padding = "same" }),
  forward = function(m, x) return m.conv(x.image) end,
}
