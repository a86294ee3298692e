-- tests/step/dcgan.lua — a small GAN with the user's own training step (tests/suite_step.sh):
-- an MLP generator and discriminator on Fashion-MNIST-shaped images, two Adam optimizers,
-- alternating discriminator and generator updates, BCE with logits (DCGAN's recipe)
model "GAN" {
  inputs = { z = Tensor{16} },
  G = Sequential { Linear(16, 64), ReLU(), Linear(64, 784), Tanh() },
  D = Sequential { Flatten(), Linear(784, 64), LeakyReLU(0.2), Linear(64, 1) },
  forward = function(m, b) return reshape(m.G(b.z), b.z:size(0), 1, 28, 28) end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { image = Tensor{1, 28, 28, dist = "uniform"}, z = Tensor{16, dist = "normal"} }, size = 64 },
  batch_size = 16,
  optimizers = {
    d = { Adam { lr = 2e-4, betas = {0.5, 0.999} }, params = "D" },
    g = { Adam { lr = 2e-4, betas = {0.5, 0.999} }, params = "G" },
  },
  training_step = function(fabric, m, b)
    local opt_d, opt_g = fabric.optimizers.d, fabric.optimizers.g
    local fake = m(b)
    -- the discriminator: real images against the generator's, detached
    opt_d:zero_grad()
    local d_real = m.D(b.image)
    local d_fake = m.D(fake:detach())
    local ones, zeros = no_grad(function() return d_real * 0 + 1, d_real * 0 end)   -- torch.ones_like, zeros_like
    local d_loss = bce_with_logits(d_real, ones) + bce_with_logits(d_fake, zeros)
    fabric.backward(d_loss)
    opt_d:step()
    -- the generator: fool the discriminator just updated
    opt_g:zero_grad()
    local g_loss = bce_with_logits(m.D(fake), ones)
    fabric.backward(g_loss)
    opt_g:step()
    return g_loss
  end,
  max_steps = 3,
}
