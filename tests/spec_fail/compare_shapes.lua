-- expect: tests/spec_fail/compare_shapes.lua:2: gt: shapes (B, 2) and (B, 4) cannot be broadcast together (dim 1: 2 vs 4)
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return where(gt(m.fc(x.x), x.x), m.fc(x.x), 0.0) end }
