-- expect: tests/spec_fail/optimizer_unknown_lists.lua:11: AdamW: unknown setting 'learning_rate'; valid settings: amsgrad, betas, decay_min_ndim, eps, groups, lr, maximize, weight_decay
model "Net" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} } },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = AdamW { learning_rate = 1e-3 },
  epochs = 1,
}
