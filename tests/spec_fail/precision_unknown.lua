-- expect: tests/spec_fail/precision_unknown.lua:7: fabric.precision: unknown precision 'half'; expected one of 32-true, 64-true, 16-mixed, bf16-mixed, 16-true, bf16-true (or the aliases 64, 32, 16, 'bf16')
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x.x) end,
}
fabric { precision = "half" }
