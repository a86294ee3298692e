-- expect: tests/spec_fail/module_outside_trace.lua:3: Linear can only be called inside a traced method (forward, loss, ...)
local fc = Linear(4, 2)
local y = fc(Tensor{4})
model "Net" {
  inputs = { x = Tensor{4} },
  fc = fc,
  forward = function(m, x) return m.fc(x.x) end,
}
