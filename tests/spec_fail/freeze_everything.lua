-- expect: tests/spec_fail/freeze_everything.lua:12: train.freeze freezes every parameter of the model: there is nothing to train
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
  freeze = "^net%.",
  max_steps = 1,
}
