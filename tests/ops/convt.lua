-- tests/ops/convt.lua — ConvTranspose2d (stride, padding, output_padding, groups,
-- dilation, no bias) and ConvTranspose1d, as a U-Net's decoder uses them (upsampled
-- features concatenated with a skip connection).
model "ConvT" {
  inputs = { x = Tensor{48} },
  down = Conv2d(3, 4, 3, { stride = 2, padding = 1 }),
  up = ConvTranspose2d(4, 3, 2, { stride = 2 }),
  up2 = ConvTranspose2d(6, 4, 3, { stride = 2, padding = 1, output_padding = 1, groups = 2 }),
  up3 = ConvTranspose2d(4, 2, { 2, 3 }, { dilation = 2, bias = false }),
  up1d = ConvTranspose1d(4, 3, 3, { stride = 2, padding = 1, output_padding = 1 }),
  head = Linear(364, 3),
  forward = function(m, b)
    local x = reshape(b.x, -1, 3, 4, 4)
    local h = tanh(m.down(x))                    -- (B, 4, 2, 2)
    local u = cat({ m.up(h), x }, 1)             -- (B, 6, 4, 4)
    local v = tanh(m.up2(u))                     -- (B, 4, 8, 8)
    local w = m.up3(v)                           -- (B, 2, 10, 12)
    local s = m.up1d(reshape(h, -1, 4, 4))       -- (B, 3, 8)
    return m.head(cat({ flatten(w, 1), flatten(s, 1), flatten(v, 1):narrow(1, 0, 100) }, 1))
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{48, dist = "normal"}, target = Tensor{3, dist = "uniform"} }, size = 64 },
  batch_size = 8,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
