-- expect: tests/spec_fail/nil_positional_argument.lua:2: Linear: argument 1 (in_features) is nil
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(nil, 2), forward = function(m, x) return m.fc(x.x) end }
