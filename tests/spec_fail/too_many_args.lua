-- expect: tests/spec_fail/too_many_args.lua:4: Linear takes at most 3 positional arguments, got 4
model "Net" {
  inputs = { x = Tensor{16} },
  fc = Linear(16, 4, true, 7),
  forward = function(m, x) return m.fc(x.x) end,
}
