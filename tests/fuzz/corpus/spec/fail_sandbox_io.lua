-- expect: tests/spec_fail/sandbox_io.lua:2: 'io' is not available in a spec: specs run in a sandbox without file access
local x = io
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x.x) end,
}
