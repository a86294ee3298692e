-- specs/vae.lua — a convolutional variational autoencoder (Kingma & Welling 2014) at
-- Fashion-MNIST's size, trained with the user's own step (train.training_step): an
-- encoder of strided convolutions to the mean and log-variance of a 16-d Gaussian, the
-- reparameterisation z = mu + exp(logvar / 2) · eps, a decoder of transposed
-- convolutions back to 1×28×28 logits, and the negative ELBO: the Bernoulli
-- reconstruction term (BCE on logits, summed over the pixels) plus the KL divergence
-- to N(0, I), both averaged over the batch.
--
-- The images are Fashion-MNIST's, in [0, 1] (the Bernoulli likelihood's targets); the
-- noise eps is drawn in the step, torch.randn_like's N(0, 1) from the run's seeded RNG
-- (its seed and step are in every checkpoint: a resumed run draws what the uninterrupted
-- one would have).
local Z = 16

-- z (B, Z) → image logits (B, 1, 28, 28); a Lua function, not a method (a method is an
-- entry point called on the batch)
local function decode(m, z) return m.decoder(reshape(m.decoder_input(z), -1, 64, 7, 7)) end

model "ConvVAE" {
  inputs = { image = Tensor{1, 28, 28} },
  encoder = Sequential {
    Conv2d(1, 32, 4, { stride = 2, padding = 1 }), ReLU(),    -- 32×14×14
    Conv2d(32, 64, 4, { stride = 2, padding = 1 }), ReLU(),   -- 64×7×7
    Flatten(), Linear(64 * 7 * 7, 256), ReLU(),
  },
  fc_mu = Linear(256, Z),
  fc_logvar = Linear(256, Z),
  decoder_input = Sequential { Linear(Z, 256), ReLU(), Linear(256, 64 * 7 * 7), ReLU() },
  decoder = Sequential {
    ConvTranspose2d(64, 32, 4, { stride = 2, padding = 1 }), ReLU(),   -- 32×14×14
    ConvTranspose2d(32, 1, 4, { stride = 2, padding = 1 }),            -- 1×28×28 logits
  },
  encode = function(m, b)
    local h = m.encoder(b.image)
    return m.fc_mu(h), m.fc_logvar(h)
  end,
  forward = function(m, b) local mu = m:encode(b); return decode(m, mu) end,   -- the mean's reconstruction
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = FashionMNIST { val_split = 5000 },
  batch_size = 128,
  optimizers = { all = { Adam { lr = 1e-3 }, params = { "encoder", "fc_mu", "fc_logvar", "decoder_input", "decoder" } } },
  training_step = function(fabric, m, b)
    local opt = fabric.optimizers.all
    opt:zero_grad()
    local mu, logvar = m:encode(b)
    local z = mu + exp(logvar * 0.5) * randn_like(mu)   -- the reparameterisation: z ~ N(mu, exp(logvar))
    local recon = bce_with_logits(flatten(decode(m, z), 1), flatten(b.image, 1)) * 784   -- summed per image
    local kl = mean(sum(1 + logvar - mu * mu - exp(logvar), 1)) * -0.5
    local loss = recon + kl
    fabric.backward(loss)
    opt:step()
    return loss
  end,
  epochs = 20,
}
