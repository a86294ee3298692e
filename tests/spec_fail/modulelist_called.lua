-- expect: tests/spec_fail/modulelist_called.lua:2: ModuleList has no forward method, so it cannot be called
model "Net" { inputs = { x = Tensor{4} }, blocks = ModuleList { Linear(4, 4), Linear(4, 4) }, forward = function(m, x) return m.blocks(x.x) end }
