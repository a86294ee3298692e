-- expect: tests/spec_fail/keepdim_not_bool.lua:4: mean: keepdim must be true or false
model "Net" {
  inputs = Tensor{4},
  forward = function(m, x) return mean(x, 1, {keepdim = 1}) end,
}
