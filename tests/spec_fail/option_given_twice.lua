-- expect: tests/spec_fail/option_given_twice.lua:4: sum got two values for 'dim' (argument 2 and the option)
model "Net" {
  inputs = Tensor{4},
  forward = function(m, x) return sum(x, 1, {dim = 1}) end,
}
