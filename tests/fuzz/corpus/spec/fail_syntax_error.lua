-- expect: tests/spec_fail/syntax_error.lua:5: '}' expected (to close '{' at line 2) near 'forward'
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2)
  forward = function(m, x) return m.fc(x.x) end,
}
