-- tests/cuda_specs/seq_ops.lua — the CUDA backend's 1-d and normalisation ops: Conv1d
-- (padding, stride, dilation, groups, no bias), RMSNorm (affine over one dim, not affine
-- over two, the default eps), AdaptiveAvgPool1d and AdaptiveAvgPool2d (global and
-- overlapping windows), maximum / minimum / pow of two tensors (broadcast), Dropout2d
-- and randn_like noise (the CPU's Philox draws), with nll_loss of log_softmax
-- (ignore_index) as the loss.  tests/suite_ops_emu.sh runs it under the CUDA emulator against the
-- CPU program.
model "SeqOps" {
  inputs = { x = Tensor{48} },
  conv = Conv1d(3, 8, 3, { padding = 1 }),
  dil = Conv1d(8, 8, 3, { padding = 2, dilation = 2, groups = 2 }),
  strided = Conv1d(8, 6, 3, { stride = 2, bias = false }),
  drop = Dropout2d(0.25),
  rms = RMSNorm(8),
  rms2 = RMSNorm({ 6, 7 }, { elementwise_affine = false }),
  pool = AdaptiveAvgPool1d(5),
  gpool = AdaptiveAvgPool2d(1),
  pool2 = AdaptiveAvgPool2d({ 2, 3 }),
  head = Linear(31, 4),
  forward = function(m, b)
    local x = reshape(b.x, -1, 3, 16)
    local h = m.drop(tanh(m.dil(m.conv(x))))                          -- (B, 8, 16)
    local r = m.rms(transpose(h, 1, 2))                               -- (B, 16, 8)
    local s = m.rms2(m.strided(transpose(r, 1, 2)))                   -- (B, 6, 7)
    local p = m.pool(s)                                               -- (B, 6, 5)
    local q = reshape(s, -1, 3, 2, 7)
    local g = flatten(m.gpool(q), 1)                                  -- (B, 3)
    local w = flatten(m.pool2(q), 1)                                  -- (B, 18)
    local mx = maximum(p, slice(p, 1, 0, 1)) + minimum(p, 0.5 * p) + pow(sigmoid(p) + 0.5, slice(p, 2, 1, 2))
    local feats = cat({ mean(mx, 1), g, w }, 1)                       -- (B, 5 + 3 + 18)
    feats = cat({ feats, mean(s, 2) + 0.01 * randn_like(mean(s, 2)) }, 1)   -- + (B, 6) - 1
    return m.head(slice(feats, 1, 0, 31))
  end,
}

fabric { accelerator = "cuda", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{48, dist = "normal"}, target = Tensor{dtype = "int64", dist = "randint", high = 4} }, size = 64 },
  batch_size = 8,
  loss = function(m, b) return nll_loss(log_softmax(m(b), 1), b.target, { ignore_index = 2 }) end,
  optimizer = AdamW { lr = 1e-3 },
  max_steps = 20,
}
