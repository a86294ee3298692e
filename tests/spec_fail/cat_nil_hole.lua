-- expect: tests/spec_fail/cat_nil_hole.lua:2: cat: argument 2 must be a tensor, got nil
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return cat{x.x, nil, x.x} end }
