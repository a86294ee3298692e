-- expect: tests/spec_fail/tensor_decl_as_field.lua:2: Net.w: a Tensor{...} declaration cannot be a module field (only model inputs and data fields are declared)
model "Net" { inputs = { x = Tensor{4} }, forward = function(m, x) return x.x end, w = Tensor{3} }
