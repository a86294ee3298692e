-- tests/ops/act.lua — issue 18's activation modules and elementwise functions, each on
-- a Linear layer's output (so the whole-model gradient check differentiates them);
-- tests/suite_ops.sh runs its gradcheck (64-true) and PyTorch parity (32-true).
model "Act" {
  inputs = { x = Tensor{12} },
  inp = Linear(12, 16),
  leaky = LeakyReLU(0.2),
  elu = ELU(0.7),
  mish = Mish(),
  softplus = Softplus({ beta = 2, threshold = 1.5 }),
  hardswish = Hardswish(),
  relu6 = ReLU6(),
  hardtanh = Hardtanh(-0.5, 0.8),
  id = Identity(),
  logsm = LogSoftmax(1),
  out = Linear(16, 3),
  forward = function(m, b)
    local h = m.inp(b.x) * 3
    local y = m.leaky(h) + m.elu(h) + m.mish(h) + m.softplus(h) + m.hardswish(h) + m.relu6(h) + m.hardtanh(h) + m.id(h)
    local p = sigmoid(h) + 0.1
    y = y + exp(h * 0.3) + log(p) + sqrt(p) + rsqrt(p) + abs(h) + pow(p, 1.7) + pow(h, 2) + clamp(h, -0.4, 0.6)
      + clamp(h, { min = 0.1 }) + leaky_relu(h) + elu(h) + softplus(h) + relu6(h) + hardtanh(h, -2, 2) + mish(h) + hardswish(h)
    return m.out(m.logsm(y))
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{12, dist = "normal"}, target = Tensor{3, dist = "uniform"} }, size = 64 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
