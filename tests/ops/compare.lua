-- tests/ops/compare.lua — argmax and the comparisons (int64 results, no gradient) feeding
-- an Embedding, where and masked_fill: a 2-d argmax (the embedding's indices), a 3-d one
-- with keepdim (a condition broadcast over its dim), comparisons with a number and
-- between two tensors: of one shape, broadcast ((B, 2, 2) with (B, 1, 2), (B, 4) with a
-- constant (4)), and an integer one with a float one (PyTorch promotes it).
model "Compare" {
  inputs = { x = Tensor{6} },
  lin = Linear(6, 4),
  lin2 = Linear(6, 4),
  emb = Embedding(4, 3),
  head = Linear(7, 2),
  forward = function(m, b)
    local h, g = m.lin(b.x), m.lin2(b.x)                  -- (B, 4)
    local e = m.emb(argmax(h, 1))                         -- (B, 3), indexed by (B,) int64
    local h2 = where(gt(h, 0.0), h, h * 0.1)              -- leaky on a comparison with a number
    h2 = masked_fill(h2, lt(h, g), 0.5)                   -- two tensors
    local sq = reshape(h2, -1, 2, 2)
    local first = eq(argmax(sq, 1, { keepdim = true }), 0.0)   -- (B, 1, 2), broadcast over dim 1
    h2 = reshape(where(first, sq, sq * 2), -1, 4)
    h2 = h2 + where(ne(g, g), 1.0, g) + where(ge(g, 0.0), g, 0.0) + where(le(h, 1.0), 0.0, h)
    -- broadcast comparisons
    local lo = lt(sq, slice(sq, 1, 0, 1))                 -- (B, 2, 2) < (B, 1, 2)
    h2 = h2 + reshape(where(lo, sq, 0.25), -1, 4)
    h2 = masked_fill(h2, gt(h, tensor({ 0.1, -0.2, 0.3, 0.0 })), -0.5)   -- (B, 4) > (4)
    local onehot = eq(argmax(h, 1, { keepdim = true }), tensor({ 0, 1, 2, 3 }))   -- int64 (B, 1) == float (4): (B, 4)
    h2 = where(onehot, h2 * 3, h2)
    return m.head(cat({ h2, e }, 1))
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{6, dist = "normal"}, target = Tensor{2, dist = "uniform"} }, size = 32 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
