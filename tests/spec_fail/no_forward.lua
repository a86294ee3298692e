-- expect: tests/spec_fail/no_forward.lua:2: model "Net" has no forward = function(m, x) ... end
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
}
