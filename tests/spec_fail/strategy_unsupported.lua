-- expect: tests/spec_fail/strategy_unsupported.lua:7: fabric.strategy 'deepspeed' is a Fabric strategy that loom does not support; use 'auto', 'ddp' or 'fsdp'
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x.x) end,
}
fabric { strategy = "deepspeed" }
