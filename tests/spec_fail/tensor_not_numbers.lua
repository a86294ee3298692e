-- expect: tests/spec_fail/tensor_not_numbers.lua:2: tensor: element [1] is string, not a number or a non-empty list
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return m.fc(x.x) * tensor({ 1, "a" }) end }
