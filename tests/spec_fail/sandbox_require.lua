-- expect: tests/spec_fail/sandbox_require.lua:2: 'require' is not available in a spec: specs run in a sandbox without loading modules
local x = require
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x.x) end,
}
