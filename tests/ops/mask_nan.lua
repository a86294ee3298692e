-- tests/ops/mask_nan.lua — MultiheadAttention with an integer (PyTorch's bool) attn_mask
-- whose second row masks every key: masked scores are -inf, so that query's weights and
-- output are NaN, as torch 1.13 gives them (not the uniform weights a large negative
-- score would give).  The loss's first column reads the attention (NaN: the loss, and
-- the gradients of every parameter before it, are NaN in both), its second a Linear of
-- the input alone (finite gradients, compared).  Parity only (tests/suite_ops.sh's NAN):
-- a gradient check has nothing finite to check here.
model "MaskNan" {
  inputs = { x = Tensor{24} },
  embed = Linear(6, 8),
  attn = MultiheadAttention(8, 2, { batch_first = true }),
  head = Linear(8, 1),
  side = Linear(24, 1),
  forward = function(m, b)
    local h = m.embed(reshape(b.x, -1, 4, 6))              -- (B, 4, 8)
    local mask = gt(tensor({ { 0, 1, 1, 1 }, { 1, 1, 1, 1 }, { 0, 0, 1, 1 }, { 0, 0, 0, 1 } }), 0.5)   -- (4, 4), row 1 all masked
    local y = m.attn(h, h, h, { attn_mask = mask })        -- (B, 4, 8), query 1 NaN
    return cat({ m.head(mean(y, 1)), m.side(b.x) }, 1)     -- (B, 2)
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{24, dist = "normal"}, target = Tensor{2, dist = "uniform"} }, size = 32 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
