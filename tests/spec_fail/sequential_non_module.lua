-- expect: tests/spec_fail/sequential_non_module.lua:4: Sequential: entry 2 is not a module (got a function; a module is made by calling its class, e.g. ReLU())
model "Net" {
  inputs = { x = Tensor{4} },
  body = Sequential { Linear(4, 8), relu, Linear(8, 2) },
  forward = function(m, x) return m.body(x.x) end,
}
