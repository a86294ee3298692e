-- expect: tests/spec_fail/module_as_option_value.lua:5: Conv2d: padding must be a non-negative integer or a pair of them, got a module
-- (found by the spec fuzzer: the message printed the refused Embedding, whose repr
-- read its missing arguments and crashed loom with an internal error)
model "M" {
  c = Conv2d(3, 4, 3, {padding = Embedding "same"}),
  inputs = Tensor{3, 8, 8},
  forward = function(m, x) return m.c(x) end,
}
