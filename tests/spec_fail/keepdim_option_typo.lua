-- expect: tests/spec_fail/keepdim_option_typo.lua:4: mean: unknown option 'keepdims' (did you mean 'keepdim'?); options: dim, keepdim
model "Net" {
  inputs = Tensor{4},
  forward = function(m, x) return mean(x, 1, {keepdims = true}) end,
}
