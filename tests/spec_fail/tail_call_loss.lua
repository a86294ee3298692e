-- expect: tests/spec_fail/tail_call_loss.lua:10: bce: target shape (B, 1) must equal input shape (B, 2)
model "Net" {
  inputs = { img = Tensor{3, 8, 8} },
  net = Sequential { Flatten(), Linear(192, 2), Sigmoid() },
  forward = function(m, x) return m.net(x.img) end,
}
train {
  data = Synthetic { fields = { img = Tensor{3, 8, 8}, target = Tensor{1} } },
  batch_size = 8,
  loss = function(m, b) return bce(m(b), b.target) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
