-- expect: tests/spec_fail/rmsprop_not_supported.lua:11: RMSprop is not supported yet; supported optimizers: Adam, AdamW, SGD
model "Net" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} } },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = RMSprop { lr = 0.01 },
  epochs = 1,
}
