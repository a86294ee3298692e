-- expect: tests/spec_fail/group_matches_nothing.lua:11: AdamW: groups[1] (params = "^encoder%.") matches no parameter of the model
model "Net" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} } },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = AdamW { groups = { { params = "^encoder%.", lr = 1e-4 } } },
  epochs = 1,
}
