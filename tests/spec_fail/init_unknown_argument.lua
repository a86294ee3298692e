-- expect: tests/spec_fail/init_unknown_argument.lua:14: kaiming_normal_ has no argument 'mod' (did you mean 'mode'?); it takes a, mode, nonlinearity
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
    if name:match("weight$") then kaiming_normal_(p, { mod = "fan_out" }) end
  end,
}
