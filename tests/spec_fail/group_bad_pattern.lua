-- expect: tests/spec_fail/group_bad_pattern.lua:11: RMSprop: groups[1] (params = "net[") is not a Lua pattern: malformed pattern (missing ']')
model "Net" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} } },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = RMSprop { groups = { { params = "net[", weight_decay = 0 } } },
  epochs = 1,
}
