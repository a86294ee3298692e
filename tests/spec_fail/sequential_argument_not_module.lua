-- expect: tests/spec_fail/sequential_argument_not_module.lua:4: Sequential: argument 2 is not a module (got number); Sequential(Linear(4, 8), ReLU()) or Sequential { Linear(4, 8), ReLU() }
model "M" {
  inputs = { x = Tensor{4} },
  net = Sequential(Linear(4, 8), 8),
  forward = function(m, b) return m.net(b.x) end,
}
