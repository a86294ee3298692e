-- tests/cuda_specs/vae_step.lua — a training_step on the CUDA backend with one SGD
-- optimizer (momentum, weight decay): specs/vae.lua's reparameterised loss at toy size
-- (a method the step calls, randn_like noise, exp, a summed reconstruction term and a
-- KL term).  tests/suite_ops_emu.sh runs it under the CUDA emulator against the CPU
-- program.
local Z = 3

model "TinyVAE" {
  inputs = { x = Tensor{10} },
  encoder = Sequential { Linear(10, 8), ReLU() },
  fc_mu = Linear(8, Z),
  fc_logvar = Linear(8, Z),
  decoder = Sequential { Linear(Z, 8), ReLU(), Linear(8, 10) },
  encode = function(m, b)
    local h = m.encoder(b.x)
    return m.fc_mu(h), m.fc_logvar(h)
  end,
  forward = function(m, b) return m.decoder(m.fc_mu(m.encoder(b.x))) end,
}

fabric { accelerator = "cuda", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{10, dist = "uniform"} }, size = 32 },
  batch_size = 8,
  optimizers = { all = { SGD { lr = 0.05, momentum = 0.9, weight_decay = 1e-3 }, params = { "encoder", "fc_mu", "fc_logvar", "decoder" } } },
  training_step = function(fabric, m, b)
    local opt = fabric.optimizers.all
    opt:zero_grad()
    local mu, logvar = m:encode(b)
    local z = mu + exp(logvar * 0.5) * randn_like(mu)
    local recon = bce_with_logits(m.decoder(z), b.x) * 10
    local kl = mean(sum(1 + logvar - mu * mu - exp(logvar), 1)) * -0.5
    local loss = recon + kl
    fabric.backward(loss)
    opt:step()
    return loss
  end,
  max_steps = 20,
}
