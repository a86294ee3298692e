-- expect: tests/spec_fail/nn_unknown_class.lua:4: nn.Dense2: nn has no module 'Dense2'; supported modules: AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Embedding, Flatten, GELU, LayerNorm, Linear, MaxPool2d, ModuleDict, ModuleList, ReLU, Sequential, SiLU, Sigmoid, Softmax, Tanh
model "Net" {
  inputs = Tensor{4},
  layer = nn.Dense2(4, 8),
  forward = function(m, x) return m.layer(x) end,
}
