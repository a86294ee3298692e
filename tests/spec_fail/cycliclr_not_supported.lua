-- expect: tests/spec_fail/cycliclr_not_supported.lua:13: CyclicLR is not supported yet; supported schedulers: CosineAnnealingLR, ExponentialLR, LambdaLR, LinearLR, MultiStepLR, OneCycleLR, ReduceLROnPlateau, SequentialLR, StepLR, WarmupCosine
model "Net" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} } },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
  scheduler = CyclicLR { base_lr = 0.01, max_lr = 0.1 },
}
