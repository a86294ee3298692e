-- bench/specs/gpt2_124m.lua — GPT-2 small's shape (124M parameters), as llm.c trains it:
-- 12 pre-LayerNorm blocks, 12 heads, width 768, context 1024, GELU (tanh), the
-- vocabulary of 50257 padded to 50304 (a multiple of 128, for the GEMMs) with the
-- output head tied to the token embedding, the loss over the 50257 real tokens only
-- (llm.c's padded logits are never read by its loss); GPT-2's initialisation (normal,
-- std 0.02; the residual projections 0.02 / sqrt(2 · 12)); AdamW (weight decay on the
-- 2-D weights only), warmup + cosine, clipping by norm 1.0, bf16-mixed on the GPU.
-- Synthetic tokens: no tokenizer or GPT-2 data can be fetched here; train on real text
-- with `data = Tokens { train = "FILE.bin", context = T }` (llm.c's token files).
-- Not an end-to-end test (specs/ are): tests/suite_cuda.sh generates and compiles it
-- (nvcc -Werror); bench/gpu_gpt2.sh times it on a GPU against PyTorch.
local V, VP, T, C, H, L = 50257, 50304, 1024, 768, 12, 12   -- vocabulary (padded), context, width, heads, blocks

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

model "GPT2" {
  inputs = { idx = Tensor{T, dtype = "int64"} },
  wte = Embedding(VP, C),
  wpe = Embedding(T, C),
  h = Sequential(blocks),
  ln_f = LayerNorm(C),
  forward = function(m, x)
    local h = m.h(m.wte(x.idx) + m.wpe.weight)                       -- (B, T, C) + (T, C)
    return matmul(m.ln_f(h), transpose(m.wte.weight, 0, 1))         -- (B, T, VP), tied head
  end,
}

fabric { accelerator = "cuda", precision = "bf16-mixed" }

train {
  data = Synthetic {
    fields = {
      idx = Tensor{T, dtype = "int64", dist = "randint", high = V},
      targets = Tensor{T, dtype = "int64", dist = "randint", high = V},
    },
    size = 1024,
  },
  batch_size = 8,
  -- GPT-2's initialisation (llm.c, nanoGPT): N(0, 0.02), the residual projections scaled
  -- by 1 / sqrt(2 · blocks); biases zero; LayerNorm's ones and zeros stay PyTorch's
  init = function(name, p)
    if name:match("ln_") then return end
    if name:match("%.bias$") then zeros_(p)
    elseif name:match("c_proj%.weight$") or name:match("mlp%.2%.weight$") then normal_(p, 0, 0.02 / math.sqrt(2 * L))
    else normal_(p, 0, 0.02) end
  end,
  -- the loss over the real vocabulary: the padded logits sliced off
  loss = function(m, b) return cross_entropy(transpose(slice(m(b), 2, 0, V), 1, 2), b.targets) end,
  optimizer = AdamW { lr = 6e-4, betas = { 0.9, 0.95 }, eps = 1e-8, weight_decay = 0.1, decay_min_ndim = 2 },
  scheduler = WarmupCosine { warmup_steps = 700, min_lr = 6e-5 },
  clip = { max_norm = 1.0 },
  max_steps = 20000,
}
