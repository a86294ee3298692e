-- expect: tests/spec_fail/recursion_local_function.lua:3: calls nest more than 400 deep here: does a function or method call itself without end?
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2),
  forward = function(m, x) local function f(n) return f(n + 1) + 1 end return f(1) end }
