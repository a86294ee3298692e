-- expect: tests/spec_fail/matmul_mismatch.lua:5: matmul: shapes (B, 4, 8) and (B, 6, 3) cannot be multiplied (8 ≠ 6)
model "Net" {
  inputs = { a = Tensor{4, 8}, b = Tensor{6, 3} },
  forward = function(m, x)
    return matmul(x.a, x.b)
  end,
}
