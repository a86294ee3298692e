-- expect: tests/spec_fail/forward_not_function.lua:2: model "Net": forward must be a function(m, x) ... end, got 3
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = 3 }
