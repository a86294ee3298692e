-- expect: tests/spec_fail/freeze_bad_pattern.lua:12: train.freeze[1]: '^net%' is not a Lua pattern: malformed pattern (ends with '%')
model "M" {
  inputs = { x = Tensor{4} },
  net = Sequential { Linear(4, 8), ReLU(), Linear(8, 2) },
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 2} } },
  batch_size = 4,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = SGD { lr = 0.1 },
  freeze = { "^net%" },
  max_steps = 1,
}
