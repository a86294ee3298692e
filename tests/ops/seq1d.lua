-- tests/ops/seq1d.lua — issue 18's 1-d modules on (N, C, L): Conv1d (padding, 'same',
-- stride, dilation, groups), GroupNorm, InstanceNorm1d (affine), RMSNorm, AdaptiveAvgPool1d,
-- Upsample (nearest, linear, align_corners), MaxPool1d (padding, ceil_mode), with
-- nll_loss of log_softmax (ignore_index).
model "Seq1d" {
  inputs = { x = Tensor{48} },
  conv = Conv1d(3, 8, 3, { padding = 1 }),
  same = Conv1d(8, 8, 4, { padding = "same", dilation = 2, groups = 2 }),
  strided = Conv1d(8, 6, 3, { stride = 2, bias = false }),
  gn = GroupNorm(2, 8, { eps = 1e-4 }),
  inorm = InstanceNorm1d(6, { affine = true }),
  rms = RMSNorm(8),
  rms2 = RMSNorm({ 6, 8 }, { eps = 1e-5, elementwise_affine = false }),
  pool = AdaptiveAvgPool1d(5),
  up = Upsample({ scale_factor = 2 }),
  lin = Upsample({ size = 11, mode = "linear" }),
  lin_ac = Upsample({ scale_factor = 1.5, mode = "linear", align_corners = true }),
  mpool = MaxPool1d(3, { stride = 2, padding = 1 }),
  mpool_ceil = MaxPool1d(2, { ceil_mode = true }),
  head = Linear(56, 5),
  forward = function(m, b)
    local x = reshape(b.x, -1, 3, 16)
    local h = m.gn(tanh(m.same(m.conv(x))))            -- (B, 8, 16)
    local s = m.inorm(m.strided(h))                    -- (B, 6, 7)
    local r = m.rms2(m.rms(reshape(slice(h, 2, 0, 6), -1, 6, 8)))   -- (B, 6, 8)
    local feats = cat({ m.pool(s):mean(1), m.up(s):mean(1), m.lin(s):mean(1), m.lin_ac(s):mean(1), r:mean(1),
                         m.mpool(s):mean(1), m.mpool_ceil(s):mean(1) }, 1)
    return log_softmax(m.head(feats), 1)
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{48, dist = "normal"}, target = Tensor{dtype = "int64", dist = "randint", high = 5} }, size = 64 },
  batch_size = 8,
  loss = function(m, b) return nll_loss(m(b), b.target, { ignore_index = 2 }) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
