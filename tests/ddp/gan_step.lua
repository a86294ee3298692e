-- tests/ddp/gan_step.lua — the user's own training step under ddp (tests/suite_ddp.sh): a
-- GAN as tests/cuda_specs/gan_step.lua's step (two Adams over G and D, D stepping twice a
-- training step, the fake images detached for D, targets under no_grad, fabric.log), but
-- with MLP nets and the noise a field of the data: without BatchNorm or noise drawn per
-- rank, 2 ranks × batch 8 must end where 1 rank × batch 16 does (every loss a mean).
model "DdpGAN" {
  inputs = { z = Tensor{8} },
  G = Sequential { Linear(8, 32), ReLU(), Linear(32, 16), Tanh() },
  D = Sequential { Linear(16, 32), LeakyReLU(0.2), Linear(32, 1) },
  forward = function(m, b) return m.G(b.z) end,
}

fabric { accelerator = "cpu", precision = "32-true", strategy = "ddp", devices = 2 }

train {
  data = Synthetic { fields = { image = Tensor{16, dist = "normal"}, z = Tensor{8, dist = "normal"} }, size = 160 },
  batch_size = 8,
  optimizers = {
    d = { Adam { lr = 2e-3, betas = {0.5, 0.999} }, params = "D" },
    g = { Adam { lr = 1e-3, betas = {0.6, 0.99}, weight_decay = 0.01 }, params = "G" },
  },
  training_step = function(fabric, m, b)
    local opt_d, opt_g = fabric.optimizers.d, fabric.optimizers.g
    local fake = m(b)
    local d_loss
    for _ = 1, 2 do
      opt_d:zero_grad()
      local d_real = m.D(b.image)
      local d_fake = m.D(fake:detach())
      local ones, zeros = no_grad(function() return d_real * 0 + 1, d_real * 0 end)
      d_loss = bce_with_logits(d_real, ones) + bce_with_logits(d_fake, zeros)
      fabric.backward(d_loss)
      opt_d:step()
    end
    fabric.log("d_loss", d_loss)
    opt_g:zero_grad()
    local d_out = m.D(fake)
    local g_loss = bce_with_logits(d_out, no_grad(function() return d_out * 0 + 1 end))
    fabric.backward(g_loss)
    opt_g:step()
    fabric.log_dict({ g_loss = g_loss, d_out = mean(d_out) })
    return g_loss
  end,
  epochs = 1,
  log_every_n_steps = 1,
}
