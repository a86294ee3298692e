-- specs/tiny_gpt.lua — a byte-level GPT (nanoGPT's shape, scaled down) trained on the
-- King James Bible: 4 distinct pre-LayerNorm blocks built with a Lua loop, GELU (tanh),
-- an output head tied to the token embedding, AdamW with weight decay on the 2-D
-- weights only, warmup + cosine, clipping by global norm 1.0.
--
-- The token files (bytes as tokens, vocabulary 256; 90% train, 10% val):
--   bible -f gen1:1-rev22:21 > /tmp/kjv.txt
--   build/loom data tokens /tmp/kjv.txt -o data/kjv.bin --val 0.1
-- The validation loss (cross-entropy per token) is in nats per byte.
--
-- 5,000 steps of 8 x 128 bytes (5.1 M bytes, 1.3 passes over the training text) at a
-- peak lr of 2e-3: val 1.48 nats/byte, samples of nearly all real words (2,000 steps at
-- 1e-3 reached 1.82, KJV-shaped but half the words misspelt); bench/tiny_gpt_val.py is
-- PyTorch's curve for the same hyperparameters (val at steps 200 / 2,000, 1 thread
-- each: loom 2.72 / 1.68, PyTorch 3.06 / 1.72).
local V, T, C, H, L = 256, 128, 256, 4, 4   -- vocabulary, context, width, heads, blocks

local function Block()
  return Module "Block" {
    ln_1 = LayerNorm(C),
    c_attn = Linear(C, 3 * C),
    c_proj = Linear(C, C),
    ln_2 = LayerNorm(C),
    mlp = Sequential { Linear(C, 4 * C), GELU { approximate = "tanh" }, Linear(4 * C, C) },
    forward = function(m, x)                           -- x: (B, T, C)
      local qkv = m.c_attn(m.ln_1(x))                  -- (B, T, 3C)
      local function heads(t)                          -- (B, T, C) -> (B, H, T, C/H)
        return transpose(reshape(t, -1, T, H, C // H), 1, 2)
      end
      local q = heads(slice(qkv, 2, 0, C))
      local k = heads(slice(qkv, 2, C, 2 * C))
      local v = heads(slice(qkv, 2, 2 * C, 3 * C))
      local y = scaled_dot_product_attention(q, k, v, { is_causal = true })
      x = x + m.c_proj(reshape(transpose(y, 1, 2), -1, T, C))
      return x + m.mlp(m.ln_2(x))
    end,
  }
end

local blocks = {}
for i = 1, L do blocks[i] = Block() end

model "TinyGPT" {
  inputs = { idx = Tensor{T, dtype = "int64"} },
  wte = Embedding(V, C),
  wpe = Embedding(T, C),
  h = Sequential(blocks),
  ln_f = LayerNorm(C),
  forward = function(m, x)
    local h = m.h(m.wte(x.idx) + m.wpe.weight)        -- (B, T, C) + (T, C)
    return matmul(m.ln_f(h), transpose(m.wte.weight, 0, 1))   -- (B, T, V), tied head
  end,
  -- an entry point beside forward (Fabric's mark_forward_method("generate")): the
  -- program's --sample N draws N bytes after --prompt, one position at a time with a
  -- key/value cache (--temperature, --top-k override these)
  generate = function(m, x)
    return autoregress(m(x), x.idx, { temperature = 0.8, top_k = 40 })
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Tokens { train = "data/kjv.bin", val = "data/kjv_val.bin", context = T },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(transpose(m(b), 1, 2), b.targets) end,
  optimizer = AdamW { lr = 2e-3, betas = { 0.9, 0.95 }, weight_decay = 0.1, decay_min_ndim = 2 },
  scheduler = WarmupCosine { warmup_steps = 100, total_steps = 5000, min_lr = 1e-4 },
  clip = { max_norm = 1.0 },
  max_steps = 5000,
}
