-- tests/precision/shared_input.lua — one input read by three Linear layers and a
-- LayerNorm: under bf16-mixed the input's cast to bf16 is read 6 times a step (three
-- forwards, three backwards), more than a fold into each reader pays for, so the
-- precision pass keeps it as a kernel.  LayerNorm (autocast's fp32 list) takes the
-- bf16 sum back to float32, and the model's output is float32 before the loss.
model "SharedInput" {
  inputs = { x = Tensor{16} },
  a = Linear(16, 8),
  b = Linear(16, 8),
  c = Linear(16, 8),
  norm = LayerNorm(8),
  head = Linear(8, 2),
  forward = function(m, b)
    local h = m.a(b.x) + m.b(b.x) + m.c(b.x)
    return m.head(relu(m.norm(h)))
  end,
}

fabric { accelerator = "cpu", precision = "bf16-mixed" }

train {
  data = Synthetic {
    fields = {
      x = Tensor{16, dist = "uniform"},
      target = Tensor{2, dist = "uniform"},
    },
    size = 512,
  },
  batch_size = 16,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = AdamW { lr = 1e-2 },
  epochs = 2,
}
