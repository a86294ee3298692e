-- expect: tests/spec_fail/module_extra_input.lua:2: Linear(4, 2) takes one input, gets 2
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return m.fc(x.x, x.x) end }
