-- expect: tests/spec_fail/conv_input_too_small.lua:2: Conv2d(3, 4, 5): input (B, 3, 4, 4) is too small for kernel size 5 (output would be 0)
model "Net" { inputs = { x = Tensor{3, 4, 4} }, c = Conv2d(3, 4, 5), forward = function(m, x) return m.c(x.x) end }
