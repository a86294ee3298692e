-- expect: tests/spec_fail/accelerator_unknown.lua:7: fabric.accelerator must be one of 'cpu', 'cuda', 'gpu', 'auto', got 'cdua' (did you mean 'cuda'?)
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x.x) end,
}
fabric { accelerator = "cdua" }
