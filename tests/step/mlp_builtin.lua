-- tests/step/mlp_builtin.lua — tests/step/mlp.lua with the built-in loop's loss and
-- optimizer instead of its training_step (tests/suite_step.sh: the same bytes)
model "MLP" {
  inputs = { x = Tensor{16} },
  net = Sequential { Linear(16, 32), Tanh(), Linear(32, 4) },
  forward = function(m, b) return m.net(b.x) end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{16, dist = "normal"}, y = Tensor{4, dist = "normal"} }, size = 64 },
  batch_size = 16,
  optimizer = Adam { lr = 1e-2 },
  loss = function(m, b) return mse(m(b), b.y) end,
  max_steps = 6,
}
