-- expect: tests/spec_fail/decl_in_arithmetic.lua:2: add: expected a tensor or a number, got a Tensor{...} declaration (those declare inputs and data fields)
model "Net" { inputs = { x = Tensor{4} }, forward = function(m, x) return x.x + Tensor{4} end }
