-- expect: tests/spec_fail/init_fan_one_dim.lua:14: xavier_uniform_(net.bias): fan in and fan out cannot be computed for a tensor of 1 dimension (3) (torch raises the same); it needs 2 or more
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
    xavier_uniform_(p)
  end,
}
