-- expect: tests/spec_fail/sandbox_setmetatable.lua:2: 'setmetatable' is not available in a spec: specs run in a sandbox without metatables
local x = setmetatable
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x.x) end,
}
