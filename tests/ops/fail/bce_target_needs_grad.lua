-- expect: tests/ops/fail/bce_target_needs_grad.lua:13: bce: a target computed from the parameters (one that needs a gradient) is not supported yet
model "Net" {
  inputs = Tensor{4},
  layer = Linear(4, 2),
  forward = function(m, x) return sigmoid(m.layer(x)) end,
}
fabric { accelerator = "cpu" }
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{2} }, size = 16 },
  batch_size = 4,
  loss = function(m, b)
    local p = m(b.x)
    return bce(p, p * 0.5)
  end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
