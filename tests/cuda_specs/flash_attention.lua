-- tests/cuda_specs/flash_attention.lua — scaled_dot_product_attention's fused (flash)
-- kernels on the CUDA backend at the edges of their tiling: cross attention (13 queries,
-- 37 keys: two key tiles, the second partial; query rows not a multiple of the block's
-- 8), head dims 40 and 72 (not multiples of a warp: 3 dims per lane), non-causal and
-- causal (query i sees keys 0..i of the 37), an explicit scale.  Checked by
-- tests/suite_ops_emu.sh against the CPU program and against the GEMM path (--gemm-attention),
-- and by tests/suite_cuda.sh (NVRTC for sm_80/sm_90, no spills).
local L, S, C, H, E, EV = 13, 37, 24, 2, 40, 72

model "FlashAttention" {
  inputs = { x = Tensor{L, C}, y = Tensor{S, C} },
  q = Linear(C, H * E),
  kv = Linear(C, H * (E + EV)),
  proj = Linear(2 * H * EV, C),
  forward = function(m, b)
    local function heads(t, n, d) return transpose(reshape(t, -1, n, H, d), 1, 2) end   -- (B, n, H·d) -> (B, H, n, d)
    local q = heads(m.q(b.x), L, E)
    local kv = m.kv(b.y)
    local k = heads(slice(kv, 2, 0, H * E), S, E)
    local v = heads(slice(kv, 2, H * E, H * (E + EV)), S, EV)
    local a = scaled_dot_product_attention(q, k, v)                                   -- (B, H, L, EV)
    local c = scaled_dot_product_attention(q, k, v, { is_causal = true, scale = 0.3 })
    local function merge(t) return reshape(transpose(t, 1, 2), -1, L, H * EV) end
    return m.proj(cat({ merge(a), merge(c) }, 2))                                     -- (B, L, C)
  end,
}

fabric { accelerator = "cuda", precision = "32-true" }

train {
  data = Synthetic {
    fields = { x = Tensor{L, C}, y = Tensor{S, C}, target = Tensor{L, C} },
  },
  batch_size = 3,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.1, momentum = 0.9 },
  max_steps = 20,
}
