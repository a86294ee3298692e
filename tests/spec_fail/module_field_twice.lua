-- expect: tests/spec_fail/module_field_twice.lua:4: 'fc' is given twice in this table (first on line 3); Lua would keep only the last
model "Net" { inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  ["fc"] = Linear(4, 8),
  forward = function(m, x) return m.fc(x.x) end }
