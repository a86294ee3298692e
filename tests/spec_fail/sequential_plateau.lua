-- expect: tests/spec_fail/sequential_plateau.lua:13: SequentialLR: schedulers[2] is ReduceLROnPlateau; SequentialLR runs CosineAnnealingLR, ExponentialLR, LambdaLR, LinearLR, MultiStepLR, StepLR
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
  scheduler = SequentialLR { schedulers = { LinearLR { total_iters = 2 }, ReduceLROnPlateau { } }, milestones = { 2 } },
}
