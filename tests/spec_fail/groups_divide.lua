-- expect: tests/spec_fail/groups_divide.lua:4: Conv2d(6, 8, 3): in_channels (6) must be divisible by groups (4)
model "Net" {
  inputs = { image = Tensor{6, 28, 28} },
  conv = Conv2d(6, 8, 3, { groups = 4 }),
  forward = function(m, x) return m.conv(x.image) end,
}
