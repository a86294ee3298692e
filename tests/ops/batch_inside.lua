-- tests/ops/batch_inside.lua — tensors whose batch dimension is not first, as an LSTM's
-- states are (layers, B, H): after transpose(x, 0, 1) to (T, B, H), slice and cat along
-- dim 0, a broadcast with a (T, 1, H) tensor and with a (B, 1) one, reductions over the
-- dims before and after the batch, softmax over dim 0, a Linear, a matmul whose row dim
-- is the batch, reshape keeping B inside, where and a comparison broadcast through it,
-- permute and back to batch first for the head.
model "BatchInside" {
  inputs = { x = Tensor{24} },
  lin = Linear(6, 6),
  gate = Linear(6, 1),
  proj = Linear(6, 5),
  w = Linear(2, 120),
  head = Linear(5, 3),
  forward = function(m, b)
    local h = m.lin(reshape(b.x, -1, 4, 6))                -- (B, 4, 6)
    local t = transpose(h, 0, 1)                           -- (4, B, 6)
    local a = cat({ slice(t, 0, 2, 4), slice(t, 0, 0, 2) }, 0)   -- (4, B, 6) rows rotated
    local s = mean(t, 0, { keepdim = true })               -- (1, B, 6)
    local per_t = sum(t, 2, { keepdim = true })            -- (4, B, 1)
    local g = m.gate(slice(h, 1, 0, 1))                    -- (B, 1, 1)
    local y = tanh(a) * s + per_t * 0.1 + reshape(g, "B", 1) -- (4, B, 6) + (B, 1)
    y = y + softmax(t, 0) + amax(t, 2, { keepdim = true })
    local p = m.proj(y)                                    -- (4, B, 5)
    local wm = reshape(m.w(tensor({ 1.0, -0.5 })), 4, 6, 5)    -- (4, 6, 5)
    local q = matmul(t, wm)                                -- (4, B, 6) @ (4, 6, 5): (4, B, 5)
    local r = reshape(p + q, 2, 2, "B", 5)                 -- (2, 2, B, 5)
    r = where(gt(r, slice(r, 0, 0, 1)), r, r * 0.5)       -- (2, 2, B, 5) > (1, 2, B, 5)
    local o = permute(r, { 2, 0, 1, 3 })                   -- (B, 2, 2, 5)
    return reshape(m.head(o), -1, 12)                      -- (B, 2, 2, 3) as (B, 12)
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{24, dist = "normal"}, target = Tensor{12, dist = "uniform"} }, size = 32 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
