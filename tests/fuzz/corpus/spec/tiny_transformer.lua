-- specs/tiny_transformer.lua — a byte-level causal transformer: residual `+`,
-- one Block applied twice (weight sharing, as in ALBERT) and an output head tied
-- to the token embedding.
local V, T, C, H = 256, 64, 64, 4   -- vocabulary, context, channels, heads

local function Block()
  return Module "Block" {
    ln_1 = LayerNorm(C),
    qkv = Linear(C, 3 * C),
    proj = Linear(C, C),
    ln_2 = LayerNorm(C),
    mlp = Sequential { Linear(C, 4 * C), GELU { approximate = "tanh" }, Linear(4 * C, C) },
    forward = function(m, x)                           -- x: (B, T, C)
      local qkv = m.qkv(m.ln_1(x))                     -- (B, T, 3C)
      local function heads(t)                          -- (B, T, C) -> (B, H, T, C/H)
        return transpose(reshape(t, -1, T, H, C // H), 1, 2)
      end
      local q = heads(slice(qkv, 2, 0, C))
      local k = heads(slice(qkv, 2, C, 2 * C))
      local v = heads(slice(qkv, 2, 2 * C, 3 * C))
      local y = scaled_dot_product_attention(q, k, v, { is_causal = true })
      y = reshape(transpose(y, 1, 2), -1, T, C)
      x = x + m.proj(y)
      return x + m.mlp(m.ln_2(x))
    end,
  }
end

model "TinyTransformer" {
  inputs = { idx = Tensor{T, dtype = "int64"} },
  wte = Embedding(V, C),
  wpe = Embedding(T, C),
  block = Block(),
  ln_f = LayerNorm(C),
  forward = function(m, x)
    local h = m.wte(x.idx) + m.wpe.weight             -- (B, T, C) + (T, C)
    h = m.block(m.block(h))                           -- the same block twice
    return matmul(m.ln_f(h), transpose(m.wte.weight, 0, 1))   -- (B, T, V), tied head
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic {
    fields = {
      idx = Tensor{T, dtype = "int64", dist = "randint", high = V},
      targets = Tensor{T, dtype = "int64", dist = "randint", high = V},
    },
  },
  batch_size = 16,
  loss = function(m, b) return cross_entropy(transpose(m(b), 1, 2), b.targets) end,
  optimizer = AdamW { lr = 3e-4 },
  max_steps = 100,
}
