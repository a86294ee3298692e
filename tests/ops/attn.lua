-- tests/ops/attn.lua — MultiheadAttention (self-attention, causal, and attention to
-- another sequence; the head-averaged weights with need_weights, a float attn_mask from
-- tensor(...), an integer one (PyTorch's bool: nonzero = masked, -inf) from a comparison,
-- a key_padding_mask from the batch, causal with weights) and
-- TransformerEncoderLayer (post-norm ReLU, pre-norm GELU), batch_first.
model "Attn" {
  inputs = { x = Tensor{40}, pad = Tensor{8, dtype = "int64", high = 2} },
  embed = Linear(8, 16),
  mem = Linear(5, 16),
  attn = MultiheadAttention(16, 4, { batch_first = true }),
  cross = MultiheadAttention(16, 2, { batch_first = true, bias = false }),
  enc = TransformerEncoderLayer(16, 4, { dim_feedforward = 24, dropout = 0.0, batch_first = true }),
  pre = TransformerEncoderLayer(16, 2, { dim_feedforward = 20, dropout = 0.0, activation = "gelu", norm_first = true,
                                         batch_first = true, layer_norm_eps = 1e-6 }),
  head = Linear(16, 3),
  forward = function(m, b)
    local t = reshape(b.x, -1, 5, 8)
    local h = m.embed(t)                                        -- (B, 5, 16)
    local s = reshape(b.x, -1, 8, 5)
    local kv = m.mem(s)                                         -- (B, 8, 16)
    h = h + m.attn(h, h, h) + m.attn(h, h, h, { need_weights = false, is_causal = true })
    h = h + m.cross(h, kv, kv)
    -- the weights (B, 5, 8) and (B, 5, 5) reach the loss through h; 8 keys, so that no
    -- sample of the seeded batch has all of them padded (PyTorch's softmax is NaN there)
    local bias = {}
    for i = 1, 5 do bias[i] = {} for j = 1, 8 do bias[i][j] = math.sin(i * j) end end
    bias = tensor(bias)
    local y, wts = m.cross(h, kv, kv, { need_weights = true, attn_mask = bias, key_padding_mask = b.pad })
    local y2, wts2 = m.attn(h, h, h, { need_weights = true, is_causal = true })
    -- an integer attn_mask: query i sees keys i .. i + 3 only
    local band = {}
    for i = 1, 5 do band[i] = {} for j = 1, 8 do band[i][j] = (j >= i and j <= i + 3) and 0 or 1 end end
    local y3 = m.cross(h, kv, kv, { attn_mask = gt(tensor(band), 0.5) })
    h = h + y + y2 + y3 + matmul(wts, kv) + matmul(wts2, h)
    h = m.pre(m.enc(h))
    return m.head(mean(h, 1))
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{40, dist = "normal"}, pad = Tensor{8, dtype = "int64", dist = "randint", high = 2},
                                target = Tensor{3, dist = "uniform"} }, size = 64 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
