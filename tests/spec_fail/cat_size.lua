-- expect: tests/spec_fail/cat_size.lua:5: cat: sizes must match except in dim 2, but tensor 2 is (B, 5, 8) and tensor 1 is (B, 4, 8)
model "Net" {
  inputs = { a = Tensor{4, 8}, b = Tensor{5, 8} },
  forward = function(m, x)
    return cat({ x.a, x.b }, 2)
  end,
}
