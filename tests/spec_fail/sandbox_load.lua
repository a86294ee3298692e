-- expect: tests/spec_fail/sandbox_load.lua:2: 'load' is not available in a spec: specs run in a sandbox without loading code
local x = load
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x.x) end,
}
