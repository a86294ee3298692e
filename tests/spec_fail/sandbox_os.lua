-- expect: tests/spec_fail/sandbox_os.lua:2: 'os' is not available in a spec: specs run in a sandbox without the operating system
local x = os
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x.x) end,
}
