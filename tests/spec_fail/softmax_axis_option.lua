-- expect: tests/spec_fail/softmax_axis_option.lua:4: softmax: unknown option 'axis'; options: dim
model "Net" {
  inputs = Tensor{4},
  forward = function(m, x) return softmax(x, {axis = -1}) end,
}
