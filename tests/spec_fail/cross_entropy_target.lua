-- expect: tests/spec_fail/cross_entropy_target.lua:10: cross_entropy: class-index target must have shape (B) for input (B, 10), gets (B, 2)
model "Net" {
  inputs = { image = Tensor{1, 28, 28} },
  net = Sequential { Flatten(), Linear(784, 10) },
  forward = function(m, x) return m.net(x.image) end,
}
train {
  data = Synthetic { fields = { image = Tensor{1, 28, 28}, label = Tensor{2, dtype = "int64"} } },
  batch_size = 32,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
