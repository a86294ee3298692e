-- expect: tests/spec_fail/inputs_unnamed.lua:2: model "Net": inputs must be named, e.g. inputs = { image = Tensor{1, 28, 28} }; entry [1] has no name
model "Net" { inputs = { Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return m.fc(x.x) end }
