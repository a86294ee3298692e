-- expect: tests/spec_fail/tensor_as_dimension.lua:2: reshape: dimension must be an integer, got Tensor(B, 4)
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return reshape(x.x, x.x) end }
