-- tests/ops/image.lua — issue 18's 2-d modules on (N, C, H, W): InstanceNorm2d,
-- GroupNorm, AdaptiveAvgPool2d (global and (2, 3)), Upsample (nearest, bilinear with and
-- without align_corners, by size and by scale factor), with kl_div ('batchmean', and
-- log_target) as the loss.
model "Image" {
  inputs = { x = Tensor{75} },
  conv = Conv2d(3, 6, 3, { padding = 1 }),
  inorm = InstanceNorm2d(6),
  gn = GroupNorm(3, 6),
  gpool = AdaptiveAvgPool2d(1),
  pool = AdaptiveAvgPool2d({ 2, 3 }),
  near = Upsample({ scale_factor = 2 }),
  bil = Upsample({ size = { 7, 9 }, mode = "bilinear" }),
  bil_ac = Upsample({ scale_factor = { 1.5, 2 }, mode = "bilinear", align_corners = true }),
  head = Linear(36, 4),
  forward = function(m, b)
    local x = reshape(b.x, -1, 3, 5, 5)
    local h = m.gn(m.inorm(tanh(m.conv(x))) * 1.5 + 0.2)        -- (B, 6, 5, 5)
    local feats = cat({
      flatten(m.gpool(h), 1),                                      -- 6
      flatten(m.pool(h), 1),                                       -- 36 ... summed below
    }, 1)
    local f = slice(feats, 1, 0, 36)
    local u = m.near(h):mean({ 2, 3 }) + m.bil(h):mean({ 2, 3 }) + m.bil_ac(h):mean({ 2, 3 })   -- (B, 6)
    return m.head(f) + u:sum(1, true)
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{75, dist = "normal"}, target = Tensor{4, dist = "normal"} }, size = 64 },
  batch_size = 8,
  loss = function(m, b)
    local y = m(b)
    return kl_div(log_softmax(y, 1), softmax(b.target, 1), { reduction = "batchmean" })
      + kl_div(log_softmax(y * 0.5, 1), log_softmax(b.target, 1), { log_target = true, reduction = "sum" })
  end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
