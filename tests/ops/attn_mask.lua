-- tests/ops/attn_mask.lua — MultiheadAttention's masks beyond one (L, S) mask: a float
-- key_padding_mask (added to the scores, as PyTorch's), a batch of attention masks,
-- (B, L, S) (every head the same; PyTorch gets it repeated per head) and (B, H, L, S)
-- (PyTorch's (B·H, L, S)), float and integer, alone and beside an integer
-- key_padding_mask; with need_weights.
model "AttnMask" {
  inputs = { x = Tensor{40}, kpf = Tensor{8}, bias = Tensor{40}, r = Tensor{80}, pad = Tensor{8, dtype = "int64", high = 2} },
  embed = Linear(8, 16),
  mem = Linear(5, 16),
  cross = MultiheadAttention(16, 2, { batch_first = true }),
  head = Linear(16, 3),
  forward = function(m, b)
    local h = m.embed(reshape(b.x, -1, 5, 8))                  -- (B, 5, 16)
    local kv = m.mem(reshape(b.x, -1, 8, 5))                   -- (B, 8, 16)
    local y1 = m.cross(h, kv, kv, { key_padding_mask = b.kpf })
    local bias = reshape(b.bias, -1, 5, 8)                     -- (B, L, S) float
    local y2, w2 = m.cross(h, kv, kv, { attn_mask = bias, need_weights = true })
    -- (B, H, L, S) integer: about a fifth of the keys masked (no row of the seeded batch all)
    local y3 = m.cross(h, kv, kv, { attn_mask = gt(reshape(b.r, -1, 2, 5, 8), 0.8) })
    -- (B, H, L, S) float, and (B, L, S) integer beside an integer key_padding_mask (key 0
    -- never masked by either)
    local y4 = m.cross(h, kv, kv, { attn_mask = reshape(b.r, -1, 2, 5, 8) * 0.5 })
    local band = lt(slice(reshape(b.r, -1, 10, 8), 1, 0, 5) + tensor({ 100, 0, 0, 0, 0, 0, 0, 0 }), 0.3)
    local pad = gt(where(b.pad, 1.0, b.kpf * 0) * tensor({ 0, 1, 1, 1, 1, 1, 1, 1 }), 0.5)
    local y5 = m.cross(h, kv, kv, { attn_mask = band, key_padding_mask = pad })
    h = h + y1 + y2 + y3 + y4 + y5 + matmul(w2, kv)
    return m.head(mean(h, 1))
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{40, dist = "normal"}, kpf = Tensor{8, dist = "normal"}, bias = Tensor{40, dist = "normal"},
                                r = Tensor{80, dist = "uniform"}, pad = Tensor{8, dtype = "int64", dist = "randint", high = 2},
                                target = Tensor{3, dist = "uniform"} }, size = 64 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
