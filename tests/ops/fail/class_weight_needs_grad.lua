-- expect: tests/ops/fail/class_weight_needs_grad.lua:14: cross_entropy: a class weight computed from the parameters (one that needs a gradient) is not supported yet
model "Net" {
  inputs = Tensor{4},
  layer = Linear(4, 3),
  forward = function(m, x) return m.layer(x) end,
}
fabric { accelerator = "cpu" }
train {
  data = Synthetic { fields = { x = Tensor{4}, label = Tensor{dtype = "int64", dist = "randint", high = 3} }, size = 16 },
  batch_size = 4,
  loss = function(m, b)
    local y = m(b.x)
    local w = softmax(mean(y, 0), 0)
    return cross_entropy(y, b.label, { weight = w })
  end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
