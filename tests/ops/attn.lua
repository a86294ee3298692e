-- tests/ops/attn.lua — MultiheadAttention (self-attention, causal, and attention to
-- another sequence) and TransformerEncoderLayer (post-norm ReLU, pre-norm GELU), batch_first.
model "Attn" {
  inputs = { x = Tensor{40} },
  embed = Linear(8, 16),
  mem = Linear(8, 16),
  attn = MultiheadAttention(16, 4, { batch_first = true }),
  cross = MultiheadAttention(16, 2, { batch_first = true, bias = false }),
  enc = TransformerEncoderLayer(16, 4, { dim_feedforward = 24, dropout = 0.0, batch_first = true }),
  pre = TransformerEncoderLayer(16, 2, { dim_feedforward = 20, dropout = 0.0, activation = "gelu", norm_first = true,
                                         batch_first = true, layer_norm_eps = 1e-6 }),
  head = Linear(16, 3),
  forward = function(m, b)
    local t = reshape(b.x, -1, 5, 8)
    local h = m.embed(t)                                        -- (B, 5, 16)
    local s = reshape(slice(b.x, 1, 0, 24), -1, 3, 8)
    local kv = m.mem(s)                                         -- (B, 3, 16)
    h = h + m.attn(h, h, h) + m.attn(h, h, h, { need_weights = false, is_causal = true })
    h = h + m.cross(h, kv, kv)
    h = m.pre(m.enc(h))
    return m.head(mean(h, 1))
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{40, dist = "normal"}, target = Tensor{3, dist = "uniform"} }, size = 64 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
