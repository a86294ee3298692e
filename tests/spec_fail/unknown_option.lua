-- expect: tests/spec_fail/unknown_option.lua:4: Conv2d got an unexpected option 'paddin' (did you mean 'padding'?); options: in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
model "Net" {
  inputs = { image = Tensor{1, 28, 28} },
  conv = Conv2d(1, 8, 3, { paddin = 1 }),
  forward = function(m, x) return m.conv(x.image) end,
}
