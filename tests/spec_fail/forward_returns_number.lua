-- expect: tests/spec_fail/forward_returns_number.lua:2: forward returns the number 3; a method returns tensors
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return m.fc(x.x), 3 end }
