-- tests/cuda_specs/plateau.lua — ReduceLROnPlateau on the CUDA backend: its lr is the
-- run's callback state, stepped after each validation on the host and sent with each
-- step's constants.  Two steps an epoch and a threshold no epoch meets: the lr halves
-- after every validation (8 steps: 0.05, 0.025, 0.0125, 0.00625), with SGD's momentum.
-- tests/suite_ops_emu.sh runs it under the CUDA emulator against the CPU program, plain
-- and with --cuda-graph.
model "Plateau" {
  inputs = { x = Tensor{6} },
  fc = Linear(6, 8),
  head = Linear(8, 2),
  forward = function(m, b) return m.head(tanh(m.fc(b.x))) end,
}

fabric { accelerator = "cuda", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{6, dist = "normal"}, y = Tensor{2, dist = "normal"} }, size = 16, val_size = 8 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.y) end,
  optimizer = SGD { lr = 0.05, momentum = 0.9 },
  scheduler = ReduceLROnPlateau { factor = 0.5, patience = 0, threshold = 0.9 },
  epochs = 4,
}
