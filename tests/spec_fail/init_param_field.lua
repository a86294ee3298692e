-- expect: tests/spec_fail/init_param_field.lua:14: a parameter has no field 'requires_grad'; it has name, shape, dim(), size(d), numel()
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
  init = function(name, p)
    if p.requires_grad then zeros_(p) end
  end,
}
