-- expect: tests/spec_fail/two_models.lua:7: a spec declares one model; 'A' was already declared at line 2
model "A" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x.x) end,
}
model "B" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x.x) end,
}
