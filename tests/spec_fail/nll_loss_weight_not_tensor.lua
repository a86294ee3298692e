-- expect: tests/spec_fail/nll_loss_weight_not_tensor.lua:11: nll_loss: weight must be a tensor of one value per class, e.g. tensor({1.0, 2.0, 0.5}); got table
model "Net" {
  inputs = Tensor{4},
  layer = Linear(4, 3),
  forward = function(m, x) return log_softmax(m.layer(x), 1) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, label = Tensor{dtype = "int64", dist = "randint", high = 3} }, size = 16 },
  batch_size = 4,
  loss = function(m, b)
    return nll_loss(m(b.x), b.label, { weight = { 1, 2, 3 } })
  end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
