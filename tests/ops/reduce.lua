-- tests/ops/reduce.lua — issue 18's reductions and binary ops (amax, max, var, std,
-- cosine_similarity, maximum, minimum, pow of tensors) and the smooth_l1 / huber losses,
-- whose target here needs a gradient too (it is computed from the parameters).
model "Reduce" {
  inputs = { x = Tensor{24} },
  a = Linear(24, 24),
  c = Linear(24, 24),
  out = Linear(14, 4),
  forward = function(m, b)
    local h = reshape(m.a(b.x), -1, 4, 6)
    local g = reshape(m.c(b.x), -1, 4, 6)
    local feats = cat({
      amax(h, 2),                          -- (B, 4)
      max(h, 1),                           -- (B, 6)
      amax(h, { 1, 2 }, true):reshape(-1, 1),
      max(g):reshape(1, 1) + sum(h, { 1, 2 }):reshape(-1, 1) * 0,   -- a scalar, broadcast
      var(h, 2):mean(1, true),
      std(g, 2, { unbiased = false }):mean(1, true),
    }, 1)
    local e = cosine_similarity(h, g, 2) + cosine_similarity(h, g, { dim = 1 }):mean(1, true)
    local mm = maximum(h, g) - minimum(h, g * 0.5) + pow(sigmoid(h) + 0.5, sigmoid(g))
    return m.out(cat({ feats, e:sum(1, true), var(mm, { 1, 2 }, { correction = 0 }):reshape(-1, 1),
      std(mm, 2):mean(1, true) }, 1):narrow(1, 0, 14))
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{24, dist = "normal"}, target = Tensor{4, dist = "uniform"} }, size = 64 },
  batch_size = 8,
  loss = function(m, b)
    local y = m(b)
    return smooth_l1(y, b.target, { beta = 0.5 }) + huber(y * 2, b.target, { delta = 0.7, reduction = "sum" })
      + mse(y, y * 0.5 + 0.1) + l1(y * 0.3, y)
  end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
