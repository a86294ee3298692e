-- expect: tests/spec_fail/library_bad_argument.lua:2: bad argument #1 to 'floor' (number expected, got string)
local C = math.floor("wide")
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, C),
  forward = function(m, x) return m.fc(x.x) end,
}
