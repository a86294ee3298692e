-- expect: tests/spec_fail/softmax_no_dim.lua:2: Softmax(): dim must be given (PyTorch's implicit dim choice is deprecated)
model "Net" { inputs = { x = Tensor{4} }, act = Softmax(), forward = function(m, x) return m.act(x.x) end }
