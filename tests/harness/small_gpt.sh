# Sourced by tests/suite_sample.sh and tests/suite_export.sh: `gpt BODY` prints the spec
# of a GPT of 2 blocks over 16 positions, vocabulary 128, tied head, that trains in
# seconds (Synthetic data, 2 steps); BODY: its methods beside forward (generate's).
# ATT_CAUSAL=false: attention without the causal mask.
gpt() {
  cat <<LUA
local V, T, C, H = 128, 16, 32, 2
local function Block()
  return Module "Block" {
    ln_1 = LayerNorm(C), c_attn = Linear(C, 3 * C), c_proj = Linear(C, C), ln_2 = LayerNorm(C),
    mlp = Sequential { Linear(C, 4 * C), GELU { approximate = "tanh" }, Linear(4 * C, C) },
    forward = function(m, x)
      local qkv = m.c_attn(m.ln_1(x))
      local function heads(t) return transpose(reshape(t, -1, T, H, C // H), 1, 2) end
      local y = scaled_dot_product_attention(heads(slice(qkv, 2, 0, C)), heads(slice(qkv, 2, C, 2 * C)),
                                             heads(slice(qkv, 2, 2 * C, 3 * C)), { is_causal = ${ATT_CAUSAL:-true} })
      x = x + m.c_proj(reshape(transpose(y, 1, 2), -1, T, C))
      return x + m.mlp(m.ln_2(x))
    end,
  }
end
model "SmallGPT" {
  inputs = { idx = Tensor{T, dtype = "int64"} },
  wte = Embedding(V, C), wpe = Embedding(T, C), h = Sequential { Block(), Block() }, ln_f = LayerNorm(C),
  lm_head = Linear(C, V),
  forward = function(m, x)
    local h = m.ln_f(m.h(m.wte(x.idx) + m.wpe.weight))
    return m.lm_head(h) + matmul(h, transpose(m.wte.weight, 0, 1)) * 0.01   -- a head, and a little of the tied one
  end,
  $1
}
train {
  data = Synthetic { fields = { idx = Tensor{T, dtype = "int64", dist = "randint", high = V},
                                targets = Tensor{T, dtype = "int64", dist = "randint", high = V} }, size = 32 },
  batch_size = 4,
  loss = function(m, b) return cross_entropy(transpose(m(b), 1, 2), b.targets) end,
  optimizer = AdamW { lr = 1e-3 },
  max_steps = 2,
}
LUA
}
