-- expect: tests/spec_fail/reshape_invalid.lua:5: reshape: shape (-1, 5, 7) is invalid for an input of shape (B, 4, 8)
model "Net" {
  inputs = { a = Tensor{4, 8} },
  forward = function(m, x)
    return reshape(x.a, -1, 5, 7)
  end,
}
