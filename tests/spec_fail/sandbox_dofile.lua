-- expect: tests/spec_fail/sandbox_dofile.lua:2: 'dofile' is not available in a spec: specs run in a sandbox without running files
local x = dofile
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x.x) end,
}
