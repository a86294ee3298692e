-- tests/step/mlp.lua — the plainest training step (tests/suite_step.sh): one optimizer,
-- zero_grad, one backward, step, as the built-in loop runs it; tests/step/mlp_builtin.lua
-- is the same model and data with `loss = ...` instead.  Both programs must end with the
-- same bytes (parameters and optimizer state) at every precision: at 16-true PyTorch
-- 1.13 has no float16 CPU kernels for a reference, so this is its check.
model "MLP" {
  inputs = { x = Tensor{16} },
  net = Sequential { Linear(16, 32), Tanh(), Linear(32, 4) },
  forward = function(m, b) return m.net(b.x) end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{16, dist = "normal"}, y = Tensor{4, dist = "normal"} }, size = 64 },
  batch_size = 16,
  optimizers = { all = { Adam { lr = 1e-2 }, params = "net" } },
  training_step = function(fabric, m, b)
    local opt = fabric.optimizers.all
    opt:zero_grad()
    local loss = mse(m(b), b.y)
    fabric.backward(loss)
    opt:step()
    return loss
  end,
  max_steps = 6,
}
