-- specs/dcgan.lua — DCGAN (Radford et al. 2016) at Fashion-MNIST's size, trained with the
-- user's own step (train.training_step): a generator of transposed convolutions from a
-- 100-d noise vector to a 1×28×28 image (7×7 → 14×14 → 28×28, BatchNorm and ReLU between,
-- Tanh out), a discriminator of strided convolutions (LeakyReLU 0.2, BatchNorm) to one
-- logit, two Adam optimizers (lr 2e-4, betas 0.5/0.999) and the alternating updates of
-- PyTorch's DCGAN example (the discriminator on real and detached fake images, then the
-- generator through the updated discriminator), with BCE on logits.  Weights start as
-- the paper's: N(0, 0.02) for convolutions, N(1, 0.02) for BatchNorm's scale.
--
-- The images are Fashion-MNIST's, scaled to [-1, 1] as Tanh produces them (torchvision's
-- Normalize((0.5,), (0.5,))); the noise is drawn in forward, torch.randn's N(0, 1) from
-- the run's seeded RNG (its seed and step are in every checkpoint: a resumed run draws
-- what the uninterrupted one would have).
local NZ, NGF, NDF = 100, 64, 64

model "DCGAN" {
  inputs = { image = Tensor{1, 28, 28} },
  G = Sequential {
    ConvTranspose2d(NZ, NGF * 2, 7, { stride = 1, padding = 0, bias = false }),        -- 128×7×7
    BatchNorm2d(NGF * 2), ReLU { inplace = true },
    ConvTranspose2d(NGF * 2, NGF, 4, { stride = 2, padding = 1, bias = false }),       -- 64×14×14
    BatchNorm2d(NGF), ReLU { inplace = true },
    ConvTranspose2d(NGF, 1, 4, { stride = 2, padding = 1, bias = false }),             -- 1×28×28
    Tanh(),
  },
  D = Sequential {
    Conv2d(1, NDF, 4, { stride = 2, padding = 1, bias = false }),                      -- 64×14×14
    LeakyReLU(0.2, { inplace = true }),
    Conv2d(NDF, NDF * 2, 4, { stride = 2, padding = 1, bias = false }),                -- 128×7×7
    BatchNorm2d(NDF * 2), LeakyReLU(0.2, { inplace = true }),
    Conv2d(NDF * 2, 1, 7, { stride = 1, padding = 0, bias = false }),                  -- 1×1×1
    Flatten(),                                                                         -- (B, 1) logits
  },
  -- a batch of the generator's images from fresh noise (PyTorch: netG(torch.randn(B, nz, 1, 1)))
  forward = function(m, b) return m.G(randn(b.image:size(0), NZ, 1, 1)) end,            -- (B, 1, 28, 28)
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = FashionMNIST { val_split = 0, normalize = true, mean = 0.5, std = 0.5 },   -- images in [-1, 1]
  batch_size = 128,
  init = function(name, p)   -- the DCGAN paper's initialisation (PyTorch's example: weights_init)
    if p:dim() == 4 then normal_(p, 0.0, 0.02)
    elseif name:match("%.weight$") then normal_(p, 1.0, 0.02)
    else zeros_(p) end
  end,
  optimizers = {
    d = { Adam { lr = 2e-4, betas = {0.5, 0.999} }, params = "D" },
    g = { Adam { lr = 2e-4, betas = {0.5, 0.999} }, params = "G" },
  },
  training_step = function(fabric, m, b)
    local opt_d, opt_g = fabric.optimizers.d, fabric.optimizers.g
    local fake = m(b)
    -- (1) the discriminator: real images → 1, the generator's (detached) → 0
    opt_d:zero_grad()
    local d_real = m.D(b.image)
    local d_fake = m.D(fake:detach())
    local ones, zeros = no_grad(function() return d_real * 0 + 1, d_real * 0 end)   -- torch.ones_like, zeros_like
    local d_loss = bce_with_logits(d_real, ones) + bce_with_logits(d_fake, zeros)
    fabric.backward(d_loss)
    opt_d:step()
    -- (2) the generator: make the updated discriminator say 1
    opt_g:zero_grad()
    local g_loss = bce_with_logits(m.D(fake), ones)
    fabric.backward(g_loss)
    opt_g:step()
    return g_loss
  end,
  epochs = 25,
}
