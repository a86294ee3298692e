-- expect: tests/spec_fail/tensor_indexed.lua:2: tensors cannot be indexed with [1]; use slice(x, dim, start, stop) or narrow
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return x.x[1] end }
