-- expect: tests/spec_fail/loss_module.lua:10: CrossEntropyLoss: loom's losses are functions: loss = function(m, b) return cross_entropy(m(b), b.target) end
model "Net" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} } },
  batch_size = 8,
  loss = CrossEntropyLoss(),
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
