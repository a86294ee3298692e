-- expect: tests/spec_fail/lstm_not_supported.lua:4: LSTM is not supported yet; supported modules: AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, Dropout, Dropout2d, ELU, Embedding, Flatten, GELU, GroupNorm, Hardswish, Hardtanh, Identity, InstanceNorm1d, InstanceNorm2d, LayerNorm, LeakyReLU, Linear, LogSoftmax, MaxPool2d, Mish, ModuleDict, ModuleList, RMSNorm, ReLU, ReLU6, Sequential, SiLU, Sigmoid, Softmax, Softplus, Tanh, Upsample
model "Net" {
  inputs = Tensor{4},
  layer = LSTM(4, 8),
  forward = function(m, x) return m.layer(x) end,
}
