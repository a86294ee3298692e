-- expect: tests/spec_fail/nn_lstm.lua:4: nn.LSTM: LSTM is not supported yet; supported modules: AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Embedding, Flatten, GELU, LayerNorm, Linear, MaxPool2d, ModuleDict, ModuleList, ReLU, Sequential, SiLU, Sigmoid, Softmax, Tanh
model "Net" {
  inputs = Tensor{4},
  layer = nn.LSTM(4, 8),
  forward = function(m, x) return m.layer(x) end,
}
