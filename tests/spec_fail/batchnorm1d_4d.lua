-- expect: tests/spec_fail/batchnorm1d_4d.lua:4: BatchNorm1d(16) expects a 2D or 3D input, gets 4D (B, 16, 26, 26)
model "Net" {
  inputs = { image = Tensor{1, 28, 28} },
  body = Sequential { Conv2d(1, 16, 3), BatchNorm1d(16) },
  forward = function(m, x) return m.body(x.image) end,
}
