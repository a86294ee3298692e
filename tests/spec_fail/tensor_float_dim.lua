-- expect: tests/spec_fail/tensor_float_dim.lua:3: Tensor: dimension 1 must be a positive integer, got 4.5
model "Net" {
  inputs = { x = Tensor{4.5} },
  forward = function(m, x) return x.x end,
}
