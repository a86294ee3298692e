-- expect: tests/spec_fail/init_nonlinearity.lua:14: kaiming_uniform_: unsupported nonlinearity 'gelu' (torch's: conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d, conv_transpose3d, leaky_relu, linear, relu, selu, sigmoid, tanh) (did you mean 'relu'?)
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
    if p:dim() == 2 then kaiming_uniform_(p, { nonlinearity = "gelu" }) end
  end,
}
