-- expect: tests/spec_fail/lightning_gradient_clip_val.lua:13: train: 'gradient_clip_val' is Lightning's name; loom writes clip = { max_norm = V } (clip by norm, Lightning's default) or clip = { clip_val = V } (by value)
model "Net" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} } },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
  gradient_clip_val = 0.5,
}
