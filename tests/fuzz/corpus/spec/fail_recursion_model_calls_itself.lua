-- expect: tests/spec_fail/recursion_model_calls_itself.lua:2: calls nest more than 400 deep here: does a function or method call itself without end?
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return m(x) end }
