-- expect: tests/spec_fail/optimizer_multiline.lua:13: AdamW.weight_decay must be a non-negative number, got -0.1
model "Net" {
  inputs = { x = Tensor{4}, y = Tensor{2} },
  fc = Linear(4, 2),
  forward = function(m, x) return m.fc(x.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, y = Tensor{2} } },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.y) end,
  optimizer = AdamW {
    lr = 1e-3,
    weight_decay = -0.1,
  },
  epochs = 1,
}
