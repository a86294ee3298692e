-- expect: tests/spec_fail/conv1d_not_supported.lua:4: Conv1d is not supported yet; supported modules: AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Embedding, Flatten, GELU, LayerNorm, Linear, MaxPool2d, ModuleDict, ModuleList, ReLU, Sequential, SiLU, Sigmoid, Softmax, Tanh
model "Net" {
  inputs = Tensor{4, 16},
  layer = Conv1d(4, 8, 3),
  forward = function(m, x) return m.layer(x) end,
}
