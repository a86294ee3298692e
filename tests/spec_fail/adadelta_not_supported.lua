-- expect: tests/spec_fail/adadelta_not_supported.lua:11: Adadelta is not supported yet; supported optimizers: Adagrad, Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, SGD
model "Net" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} } },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = Adadelta { lr = 1.0 },
  epochs = 1,
}
