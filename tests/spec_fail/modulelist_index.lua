-- expect: tests/spec_fail/modulelist_index.lua:2: ModuleList index 3 out of range: it has 2 modules (indices 1..2 in Lua)
model "Net" { inputs = { x = Tensor{4} }, blocks = ModuleList { Linear(4, 4), Linear(4, 4) }, forward = function(m, x) return m.blocks[3](x.x) end }
