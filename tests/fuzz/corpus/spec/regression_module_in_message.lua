-- the spec fuzzer's input (reduced): a module where an option wants a number made the
-- error message print the half-built module, an internal error
model "M" {
  c = Conv2d(3, 4, 3, {padding = Embedding "same"}),
  inputs = Tensor{3, 8, 8},
  forward = function(m, x) return m.c(x) end,
}
