-- expect: tests/spec_fail/matmul_precision_bad.lua:7: fabric.float32_matmul_precision must be one of 'highest', 'high', 'medium', got 'hihg' (did you mean 'high'?)
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x.x) end,
}
fabric { precision = "32-true", float32_matmul_precision = "hihg" }
