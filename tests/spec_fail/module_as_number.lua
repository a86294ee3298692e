-- expect: tests/spec_fail/module_as_number.lua:2: Linear: in_features must be a positive integer, got a module
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(Linear(1,1), 2), forward = function(m, x) return m.fc(x.x) end }
