-- expect: tests/spec_fail/adam_decay_min_ndim.lua:11: Adam: unknown setting 'decay_min_ndim'; valid settings: amsgrad, betas, eps, groups, lr, maximize, weight_decay
model "M" {
  inputs = { idx = Tensor{8, dtype = "int64"} },
  wte = Embedding(256, 16),
  forward = function(m, x) return m.wte(x.idx) end,
}
train {
  data = Tokens { train = "data/kjv.bin", context = 8 },
  batch_size = 2,
  loss = function(m, b) return cross_entropy(transpose(m(b), 1, 2), b.targets) end,
  optimizer = Adam { decay_min_ndim = 2 },
  max_steps = 1,
}
