-- tests/ops/class_weight.lua — PyTorch's per-class `weight` of cross_entropy and nll_loss:
-- class-index targets with label smoothing and an ignore_index that is a real class (so
-- some entries are ignored and the mean divides by the weights of the rest), probability
-- targets, a (N, C, S) input, and each reduction.
local W = { 0.5, 2.0, 1.0, 3.0, 0.25 }
model "ClassWeight" {
  inputs = { x = Tensor{12} },
  a = Linear(12, 5),
  b = Linear(12, 15),
  forward = function(m, b) return m.a(b.x), reshape(m.b(b.x), -1, 5, 3) end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic {
    fields = {
      x = Tensor{12, dist = "normal"},
      label = Tensor{dtype = "int64", dist = "randint", high = 5},
      seq = Tensor{3, dtype = "int64", dist = "randint", high = 5},
      probs = Tensor{5, dist = "uniform"},
    },
    size = 64,
  },
  batch_size = 8,
  loss = function(m, b)
    local y, z = m(b)
    local w = tensor(W)
    return cross_entropy(y, b.label, { weight = w, label_smoothing = 0.1, ignore_index = 2 })
      + cross_entropy(z, b.seq, { weight = w, reduction = "sum" }) * 0.1
      + mean(cross_entropy(y, b.probs, { weight = w, label_smoothing = 0.2, reduction = "none" }))
      + nll_loss(log_softmax(z, 1), b.seq, { weight = w, ignore_index = 4 })
      + mean(nll_loss(log_softmax(y, 1), b.label, { weight = w, reduction = "none" }))
  end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
