-- expect: tests/spec_fail/unknown_layer.lua:4: unknown name 'Linaer' (did you mean 'Linear'?)
model "Net" {
  inputs = { image = Tensor{1, 28, 28} },
  net = Sequential { Flatten(), Linaer(784, 10) },
  forward = function(m, x) return m.net(x.image) end,
}
