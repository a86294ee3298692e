-- expect: tests/spec_fail/embedding_float.lua:4: Embedding(100, 8) expects integer indices (a Tensor with dtype = 'int64'), gets float
model "Net" {
  inputs = { tokens = Tensor{16} },
  emb = Embedding(100, 8),
  forward = function(m, x) return m.emb(x.tokens) end,
}
