-- tests/ops/where.lua — where (tensor and number operands, a broadcast condition) and
-- masked_fill, with an integer mask from the data (nonzero = true); where's operands
-- broadcast together as torch.where's (a (12) tensor against (B, 12) ones: its gradient
-- summed over the batch; a (B, 1) condition with (B, 1) and (12) operands), masked_fill's
-- mask broadcast to the tensor; masked_fill with -math.huge (-inf) before a softmax; an
-- integer mask sliced and transposed.
model "Where" {
  inputs = { x = Tensor{12}, mask = Tensor{12, dtype = "int64", high = 2}, row = Tensor{dtype = "int64", high = 2} },
  a = Linear(12, 12),
  c = Linear(12, 12),
  d = Linear(3, 12),
  e = Linear(12, 1),
  out = Linear(12, 2),
  forward = function(m, b)
    local h, g = m.a(b.x), m.c(b.x)
    local y = where(b.mask, h, g) + where(b.mask, 0.5, g) + where(unsqueeze(b.row, 1), h, -1.0) + masked_fill(h * g, b.mask, -2.0)
    local v = m.d(tensor({ 0.5, -1.0, 2.0 }))             -- (12): no batch dimension
    local col = m.e(g)                                     -- (B, 1)
    y = y + where(b.mask, h, v) + where(b.mask, v, -0.5) + where(unsqueeze(b.row, 1), col, v)
    y = y + masked_fill(g, unsqueeze(b.row, 1), -3.0)      -- a (B, 1) mask over (B, 12)
    -- -inf through softmax (masked elements get 0 and no gradient; column 0 is never masked)
    y = y + softmax(cat({ slice(h, 1, 0, 1), masked_fill(slice(h, 1, 1, 12), slice(b.mask, 1, 1, 12), -math.huge) }, 1), 1)
    -- an integer mask transposed (the _i64 data movement kernels)
    y = y + where(reshape(transpose(reshape(b.mask, -1, 3, 4), 1, 2), -1, 12), g, h)
    return m.out(y)
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{12, dist = "normal"}, mask = Tensor{12, dtype = "int64", dist = "randint", high = 2},
                                row = Tensor{dtype = "int64", dist = "randint", high = 2},
                                target = Tensor{2, dist = "uniform"} }, size = 64 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
