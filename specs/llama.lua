-- specs/llama.lua — a Llama-style decoder (the Llama 2 block, scaled down) on the King
-- James Bible's bytes: RMSNorm before attention and before the MLP, causal multi-head
-- attention with rotary position embeddings (RoPE) on the queries and keys, a SiLU-gated
-- MLP (down(silu(gate(x)) · up(x))), no biases anywhere, an untied output head; Hugging
-- Face's parameter names (self_attn.q_proj, mlp.gate_proj, input_layernorm, ...).
--
-- The rotary tables are computed here in Lua (θ_i = 10000^(-2i/d) per head dimension
-- pair, position t's angle t·θ_i) and enter the forward as constants, tensor(...) (as
-- torch.tensor: no gradient, not in the state_dict); the rotation itself is written with
-- the element-wise ops, in Hugging Face's rotate_half form:
--   q·cos + rotate_half(q)·sin,  rotate_half(q) = cat(-q[d/2:], q[:d/2]).
--
-- The token files (bytes as tokens, vocabulary 256; 90% train, 10% val), which `ninja`
-- writes:
--   bible -f gen1:1-rev22:21 > /tmp/kjv.txt
--   build/loom data tokens /tmp/kjv.txt -o data/kjv.bin --val 0.1
-- The validation loss (cross-entropy per token) is in nats per byte.
local V, T, C, H, L, F = 256, 64, 128, 4, 4, 352   -- vocabulary, context, width, heads, blocks, MLP width
local D = C // H                                    -- head dimension

-- cos and sin of every position's angles, (T, D): each angle twice (both halves)
local cos_t, sin_t = {}, {}
for t = 0, T - 1 do
  local c, s = {}, {}
  for i = 0, D // 2 - 1 do
    local angle = t * 10000 ^ (-2 * i / D)
    c[i + 1], c[i + 1 + D // 2] = math.cos(angle), math.cos(angle)
    s[i + 1], s[i + 1 + D // 2] = math.sin(angle), math.sin(angle)
  end
  cos_t[t + 1], sin_t[t + 1] = c, s
end

local function rotate(x, cos, sin)                  -- x: (B, H, T, D)
  local x1, x2 = slice(x, 3, 0, D // 2), slice(x, 3, D // 2, D)
  return x * cos + cat({ -x2, x1 }, 3) * sin
end

local function Block()
  return Module "LlamaDecoderLayer" {
    input_layernorm = RMSNorm(C, { eps = 1e-5 }),
    self_attn = Module "LlamaAttention" {
      q_proj = Linear(C, C, { bias = false }),
      k_proj = Linear(C, C, { bias = false }),
      v_proj = Linear(C, C, { bias = false }),
      o_proj = Linear(C, C, { bias = false }),
      forward = function(m, x)                       -- x: (B, T, C)
        local function heads(t) return transpose(reshape(t, -1, T, H, D), 1, 2) end   -- (B, H, T, D)
        local cos, sin = tensor(cos_t), tensor(sin_t)
        local q = rotate(heads(m.q_proj(x)), cos, sin)
        local k = rotate(heads(m.k_proj(x)), cos, sin)
        local y = scaled_dot_product_attention(q, k, heads(m.v_proj(x)), { is_causal = true })
        return m.o_proj(reshape(transpose(y, 1, 2), -1, T, C))
      end,
    },
    post_attention_layernorm = RMSNorm(C, { eps = 1e-5 }),
    mlp = Module "LlamaMLP" {
      gate_proj = Linear(C, F, { bias = false }),
      up_proj = Linear(C, F, { bias = false }),
      down_proj = Linear(F, C, { bias = false }),
      forward = function(m, x) return m.down_proj(silu(m.gate_proj(x)) * m.up_proj(x)) end,
    },
    forward = function(m, x)
      x = x + m.self_attn(m.input_layernorm(x))
      return x + m.mlp(m.post_attention_layernorm(x))
    end,
  }
end

local layers = {}
for i = 1, L do layers[i] = Block() end

model "Llama" {
  inputs = { idx = Tensor{T, dtype = "int64"} },
  embed_tokens = Embedding(V, C),
  layers = ModuleList(layers),
  norm = RMSNorm(C, { eps = 1e-5 }),
  lm_head = Linear(C, V, { bias = false }),
  forward = function(m, x)
    local h = m.embed_tokens(x.idx)                  -- (B, T, C)
    for i = 1, L do h = m.layers[i](h) end
    return m.lm_head(m.norm(h))                      -- (B, T, V)
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Tokens { train = "data/kjv.bin", val = "data/kjv_val.bin", context = T },
  batch_size = 16,
  loss = function(m, b) return cross_entropy(transpose(m(b), 1, 2), b.targets) end,
  optimizer = AdamW { lr = 1e-3, betas = { 0.9, 0.95 }, weight_decay = 0.1, decay_min_ndim = 2 },
  scheduler = WarmupCosine { warmup_steps = 100, total_steps = 2000, min_lr = 1e-4 },
  clip = { max_norm = 1.0 },
  max_steps = 2000,
}
