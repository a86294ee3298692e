-- tests/ddp/acc_step.lua — a training step whose one optimizer step reads gradients two
-- backwards added up (tests/suite_ddp.sh): under ddp they are averaged once, before the
-- step (PyTorch DDP averages each backward's; for a sum the same), then clipped by their
-- norm (clip reads the averaged gradients, as Fabric's clip_gradients does under DDP).
-- SGD with momentum; validated on the loss the step returns; 2 ranks × 8 against 1 × 16.
model "DdpTwoHeads" {
  inputs = { x = Tensor{12} },
  body = Sequential { Linear(12, 24), Tanh() },
  cls = Linear(24, 3),
  reg = Linear(24, 2),
  forward = function(m, b) local h = m.body(b.x) return m.cls(h), m.reg(h) end,
}

fabric { accelerator = "cpu", precision = "32-true", strategy = "ddp", devices = 2 }

train {
  data = Synthetic {
    fields = { x = Tensor{12, dist = "normal"}, y = Tensor{dtype = "int64", dist = "randint", high = 3}, t = Tensor{2, dist = "normal"} },
    size = 160, val_size = 32,
  },
  batch_size = 8,
  optimizers = { all = { SGD { lr = 0.1, momentum = 0.9 }, params = { "body", "cls", "reg" } } },
  clip = { max_norm = 0.5 },
  training_step = function(fabric, m, b)
    local opt = fabric.optimizers.all
    opt:zero_grad()
    local logits, r = m(b)
    fabric.backward(cross_entropy(logits, b.y))
    local logits2, r2 = m(b)
    local reg = mse(r2, b.t)
    fabric.backward(reg)
    opt:step()
    fabric.log("reg", reg)
    return cross_entropy(logits2, b.y)
  end,
  epochs = 1,
  log_every_n_steps = 1,
}
