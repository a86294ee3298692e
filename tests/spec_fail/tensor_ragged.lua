-- expect: tests/spec_fail/tensor_ragged.lua:2: tensor: element [1] has 1 entries, its siblings 2 (ragged nesting)
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return m.fc(x.x) * tensor({ { 1, 2 }, { 3 } }) end }
