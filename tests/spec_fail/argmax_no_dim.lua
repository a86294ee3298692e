-- expect: tests/spec_fail/argmax_no_dim.lua:2: argmax: give dim (without it PyTorch's argmax is over the flattened tensor, the batch too)
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return where(eq(argmax(x.x), 0.0), m.fc(x.x), 0.0) end }
