-- expect: tests/spec_fail/cross_entropy_weight_shape.lua:12: cross_entropy: weight must be a float tensor of one value per class, shape (3), gets float (4)
model "Net" {
  inputs = Tensor{4},
  layer = Linear(4, 3),
  forward = function(m, x) return m.layer(x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, label = Tensor{dtype = "int64", dist = "randint", high = 3} }, size = 16 },
  batch_size = 4,
  loss = function(m, b)
    local y = m(b.x)
    return cross_entropy(y, b.label, { weight = tensor({ 1, 2, 3, 4 }) })
  end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
