-- tests/ops/bce_weight.lua — PyTorch's `weight` of bce and bce_with_logits (each element's
-- loss times it, broadcast: per class and per element) and bce_with_logits' `pos_weight`
-- (per class, and one value for all), with each reduction; the weight of one term is
-- computed from the parameters, so its gradient flows (as in PyTorch).
model "BceWeight" {
  inputs = { x = Tensor{12} },
  a = Linear(12, 4),
  b = Linear(12, 4),
  forward = function(m, b) return m.a(b.x), m.b(b.x) end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{12, dist = "normal"}, target = Tensor{4, dist = "uniform"} }, size = 64 },
  batch_size = 8,
  loss = function(m, b)
    local y, z = m(b)
    local pw, w = tensor({ 3.0, 0.5, 1.0, 2.0 }), tensor({ 1.5, 1.0, 0.25, 2.0 })
    return bce_with_logits(y, b.target, { pos_weight = pw })
      + bce_with_logits(y, b.target, { weight = w, pos_weight = tensor({ 4.0 }), reduction = "sum" }) * 0.1
      + mean(bce_with_logits(z, b.target, { weight = sigmoid(y), reduction = "none" }))
      + bce(sigmoid(z), b.target, { weight = w })
  end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
