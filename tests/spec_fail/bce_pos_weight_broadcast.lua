-- expect: tests/spec_fail/bce_pos_weight_broadcast.lua:11: bce_with_logits: pos_weight of shape (3) does not broadcast to the input's (B, 4)
model "Net" {
  inputs = Tensor{4},
  layer = Linear(4, 4),
  forward = function(m, x) return m.layer(x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{4} }, size = 16 },
  batch_size = 4,
  loss = function(m, b)
    return bce_with_logits(m(b.x), b.target, { pos_weight = tensor({ 1, 2, 3 }) })
  end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
