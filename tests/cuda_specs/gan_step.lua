-- tests/cuda_specs/gan_step.lua — a training_step on the CUDA backend: specs/dcgan.lua's
-- step at toy size (two Adams over G and D, each zero_grad/backward/step, the fake
-- images detached for D's loss, no_grad targets, randn noise in forward, BatchNorm in
-- both nets run several times a step) plus a second D step per training step (an
-- optimizer stepping twice: its own count of updates for the bias corrections).
-- tests/suite_ops_emu.sh runs it under the CUDA emulator against the CPU program.
local NZ = 4

model "TinyGAN" {
  inputs = { image = Tensor{1, 8, 8} },
  G = Sequential {
    ConvTranspose2d(NZ, 6, 4, { stride = 1, padding = 0, bias = false }),   -- 6×4×4
    BatchNorm2d(6), ReLU(),
    ConvTranspose2d(6, 1, 4, { stride = 2, padding = 1, bias = false }),    -- 1×8×8
    Tanh(),
  },
  D = Sequential {
    Conv2d(1, 4, 4, { stride = 2, padding = 1, bias = false }),             -- 4×4×4
    LeakyReLU(0.2),
    Conv2d(4, 8, 4, { stride = 2, padding = 1, bias = false }),             -- 8×2×2
    BatchNorm2d(8), LeakyReLU(0.2),
    Flatten(), Linear(32, 1),
  },
  forward = function(m, b) return m.G(randn(b.image:size(0), NZ, 1, 1)) end,
}

fabric { accelerator = "cuda", precision = "32-true" }

train {
  data = Synthetic { fields = { image = Tensor{1, 8, 8, dist = "normal"} }, size = 32 },
  batch_size = 8,
  optimizers = {
    d = { Adam { lr = 2e-3, betas = {0.5, 0.999} }, params = "D" },
    g = { Adam { lr = 1e-3, betas = {0.6, 0.99}, weight_decay = 0.01 }, params = "G" },
  },
  training_step = function(fabric, m, b)
    local opt_d, opt_g = fabric.optimizers.d, fabric.optimizers.g
    local fake = m(b)
    for _ = 1, 2 do
      opt_d:zero_grad()
      local d_real = m.D(b.image)
      local d_fake = m.D(fake:detach())
      local ones, zeros = no_grad(function() return d_real * 0 + 1, d_real * 0 end)
      fabric.backward(bce_with_logits(d_real, ones) + bce_with_logits(d_fake, zeros))
      opt_d:step()
    end
    opt_g:zero_grad()
    local d_out = m.D(fake)
    local g_loss = bce_with_logits(d_out, no_grad(function() return d_out * 0 + 1 end))
    fabric.backward(g_loss)
    opt_g:step()
    return g_loss
  end,
  max_steps = 20,
}
