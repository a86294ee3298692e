-- expect: tests/spec_fail/conv3d_not_supported.lua:4: Conv3d is not supported yet; supported modules: AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d, Dropout, Dropout2d, ELU, Embedding, Flatten, GELU, GRU, GroupNorm, Hardswish, Hardtanh, Identity, InstanceNorm1d, InstanceNorm2d, LSTM, LayerNorm, LeakyReLU, Linear, LogSoftmax, MaxPool1d, MaxPool2d, Mish, ModuleDict, ModuleList, MultiheadAttention, Parameter, RMSNorm, ReLU, ReLU6, Sequential, SiLU, Sigmoid, Softmax, Softplus, Tanh, TransformerEncoderLayer, Upsample
model "Net" {
  inputs = Tensor{4, 8, 8, 8},
  layer = Conv3d(4, 8, 3),
  forward = function(m, x) return m.layer(x) end,
}
