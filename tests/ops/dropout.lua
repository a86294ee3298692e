-- tests/ops/dropout.lua — the modules whose training forward draws random masks that
-- PyTorch does not reproduce (loom's Philox streams): gradient check only.  Dropout2d on
-- (N, C, H, W) and (N, C, L); MultiheadAttention's dropout on the attention weights;
-- TransformerEncoderLayer's default dropout (0.1); LSTM's dropout between layers.
model "Drop2d" {
  inputs = { x = Tensor{32} },
  inp = Linear(32, 48),
  drop = Dropout2d(0.3),
  drop1 = Dropout2d(0.5),
  attn = MultiheadAttention(8, 2, { dropout = 0.2, batch_first = true }),
  enc = TransformerEncoderLayer(8, 2, { dim_feedforward = 12, batch_first = true }),
  lstm = LSTM(8, 4, { num_layers = 2, dropout = 0.3, batch_first = true }),
  out = Linear(72, 2),
  forward = function(m, b)
    local h = m.drop(reshape(m.inp(b.x), -1, 6, 4, 2))
    local g = m.drop1(reshape(h, -1, 12, 4))
    local s = reshape(g, -1, 6, 8)
    local a = m.lstm(m.enc(s + m.attn(s, s, s)))   -- (B, 6, 4)
    return m.out(cat({ flatten(g, 1), flatten(a, 1) }, 1))
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{32, dist = "normal"}, target = Tensor{2, dist = "uniform"} }, size = 64 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
