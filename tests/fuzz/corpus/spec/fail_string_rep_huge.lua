-- expect: tests/spec_fail/string_rep_huge.lua:2: string.rep: the result would be larger than 16 MiB
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return string.rep("x", 1e10) end }
