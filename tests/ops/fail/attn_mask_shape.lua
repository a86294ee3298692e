-- expect: tests/ops/fail/attn_mask_shape.lua:11: MultiheadAttention(16, 2): attn_mask must be (5, 5), (batch, 5, 5) or (batch, 2, 5, 5) (PyTorch's (batch·heads, 5, 5)), a float tensor (added to the scores) or an integer one (nonzero = not allowed), gets float (B, 2, 8)
-- tests/ops/fail/attn_mask_shape.lua — a batch of attention masks that is neither
-- (B, L, S) nor (B, H, L, S) (here (B, H, S): the query dim missing) is refused at its line.
model "AttnMaskShape" {
  inputs = { x = Tensor{40}, m = Tensor{16} },
  embed = Linear(8, 16),
  attn = MultiheadAttention(16, 2, { batch_first = true }),
  head = Linear(16, 3),
  forward = function(m, b)
    local h = m.embed(reshape(b.x, -1, 5, 8))
    return m.head(mean(m.attn(h, h, h, { attn_mask = reshape(b.m, -1, 2, 8) }), 1))
  end,
}

train {
  data = Synthetic { fields = { x = Tensor{40, dist = "normal"}, m = Tensor{16, dist = "normal"}, target = Tensor{3, dist = "uniform"} }, size = 16 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
