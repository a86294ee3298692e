-- expect: tests/spec_fail/keras_dense.lua:4: Dense is Keras's name; loom's (PyTorch's) is Linear(in_features, out_features)
model "Net" {
  inputs = Tensor{4},
  layer = Dense(4, 8),
  forward = function(m, x) return m.layer(x) end,
}
