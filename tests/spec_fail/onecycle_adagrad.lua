-- expect: tests/spec_fail/onecycle_adagrad.lua:11: OneCycleLR: cycle_momentum = true, but Adagrad has no momentum or beta1 to cycle (torch raises the same); or set cycle_momentum = false
model "Net" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} } },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = Adagrad { lr = 0.01 }, scheduler = OneCycleLR { max_lr = 0.1 },
  epochs = 1,
}
