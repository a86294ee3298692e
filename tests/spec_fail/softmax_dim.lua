-- expect: tests/spec_fail/softmax_dim.lua:5: softmax: dim 2 is out of range for a 2-d tensor (expected in [-2, 1])
model "Net" {
  inputs = { a = Tensor{10} },
  forward = function(m, x)
    return softmax(x.a, 2)
  end,
}
