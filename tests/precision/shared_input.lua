-- tests/precision/shared_input.lua — every kind of fold under bf16-mixed:
--  - the input, converted to bf16 (convert_input), is read by two Linear layers and a
--    LayerNorm: 5 reads a step (two forwards, two backwards, the cast back to float32
--    for LayerNorm), more than a fold into each reader pays for, so that
--    cast is kept as a kernel;
--  - LayerNorm (autocast's fp32 list) casts that bf16 copy back to float32: a cast of
--    a cast, folded into LayerNorm's load;
--  - LayerNorm's float32 output is read only by the cast to bf16 for Linear c: the
--    cast is folded into LayerNorm's store;
--  - the weights' casts and the cast of the output to float32 fold into their readers.
model "SharedInput" {
  inputs = { x = Tensor{16} },
  a = Linear(16, 8),
  b = Linear(16, 8),
  c = Linear(16, 8),
  pre = LayerNorm(16),
  norm = LayerNorm(8),
  head = Linear(8, 2),
  forward = function(m, b)
    local h = m.a(b.x) + m.b(b.x) + m.c(m.pre(b.x))
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
