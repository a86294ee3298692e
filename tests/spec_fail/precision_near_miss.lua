-- expect: tests/spec_fail/precision_near_miss.lua:7: fabric.precision: unknown precision 'bf16-mix'; expected one of 32-true, 64-true, 16-mixed, bf16-mixed, 16-true, bf16-true (or the aliases 64, 32, 16, 'bf16') (did you mean 'bf16-mixed'?)
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x.x) end,
}
fabric { precision = "bf16-mix" }
