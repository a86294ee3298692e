-- expect: tests/spec_fail/freeze_matches_nothing.lua:12: train.freeze[2] ("^fc%.") matches no parameter of the model; its parameters: net.0.weight, net.0.bias, net.2.weight, net.2.bias
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
  freeze = { "^net%.0%.", "^fc%." },
  max_steps = 1,
}
