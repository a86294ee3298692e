-- tests/step/vae.lua — a small VAE with the user's own training step (tests/suite_step.sh):
-- encoder → mu, logvar; z = mu + exp(logvar / 2) · eps with the noise eps a field of the
-- batch (so PyTorch can be fed the same); reconstruction (BCE with logits, summed per
-- image) + KL divergence, averaged over the batch
model "VAE" {
  inputs = { x = Tensor{1, 28, 28} },
  enc = Sequential { Flatten(), Linear(784, 64), ReLU() },
  mu = Linear(64, 8),
  logvar = Linear(64, 8),
  dec = Sequential { Linear(8, 64), ReLU(), Linear(64, 784) },
  encode = function(m, b) local h = m.enc(b.x); return m.mu(h), m.logvar(h) end,
  forward = function(m, b) local mu = m:encode(b); return m.dec(mu) end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{1, 28, 28, dist = "uniform"}, eps = Tensor{8, dist = "normal"} }, size = 64 },
  batch_size = 16,
  optimizers = { all = { Adam { lr = 1e-3 }, params = { "enc", "mu", "logvar", "dec" } } },
  training_step = function(fabric, m, b)
    local opt = fabric.optimizers.all
    opt:zero_grad()
    local mu, logvar = m:encode(b)
    local z = mu + exp(logvar * 0.5) * b.eps
    local recon = bce_with_logits(m.dec(z), flatten(b.x, 1)) * 784
    local kl = mean(sum(1 + logvar - mu * mu - exp(logvar), 1)) * -0.5
    local loss = recon + kl
    fabric.backward(loss)
    opt:step()
    return loss
  end,
  max_steps = 3,
}
