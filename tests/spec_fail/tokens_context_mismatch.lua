-- expect: tests/spec_fail/tokens_context_mismatch.lua:3: model input 'idx' is declared int64 (8) but Tokens gives int64 (16)
model "M" {
  inputs = { idx = Tensor{8, dtype = "int64"} },
  wte = Embedding(256, 16),
  forward = function(m, x) return m.wte(x.idx) end,
}
train {
  data = Tokens { train = "data/kjv.bin", context = 16 },
  batch_size = 2,
  loss = function(m, b) return cross_entropy(transpose(m(b), 1, 2), b.targets) end,
  optimizer = AdamW {},
  max_steps = 1,
}
