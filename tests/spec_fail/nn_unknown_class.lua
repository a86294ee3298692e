-- expect: tests/spec_fail/nn_unknown_class.lua:4: nn.Dense2: nn has no module 'Dense2'; supported modules: AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d, Dropout, Dropout2d, ELU, Embedding, Flatten, GELU, GRU, GroupNorm, Hardswish, Hardtanh, Identity, InstanceNorm1d, InstanceNorm2d, LSTM, LayerNorm, LeakyReLU, Linear, LogSoftmax, MaxPool1d, MaxPool2d, Mish, ModuleDict, ModuleList, MultiheadAttention, Parameter, RMSNorm, ReLU, ReLU6, Sequential, SiLU, Sigmoid, Softmax, Softplus, Tanh, TransformerEncoderLayer, Upsample
model "Net" {
  inputs = Tensor{4},
  layer = nn.Dense2(4, 8),
  forward = function(m, x) return m.layer(x) end,
}
