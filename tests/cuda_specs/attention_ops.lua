-- tests/cuda_specs/attention_ops.lua — the CUDA backend's non-elementwise ops of a
-- transformer, without the elementwise ones (no residual `+`, relu for gelu):
-- embedding (padding_idx), layer_norm, slice (with step), transpose / permute, reshape,
-- scaled_dot_product_attention (causal), matmul (dense, shared, broadcast operands),
-- softmax over a middle dim, log_softmax, sum over a middle dim, mean over the last
-- dim, cat, cross_entropy over a transposed output.  Checked by tests/suite_cuda.sh (builds
-- and kernels) and tests/suite_ops_emu.sh (runs under the CUDA emulator against the CPU).
local V, T, C, H = 64, 16, 32, 4

model "AttentionOps" {
  inputs = { idx = Tensor{T, dtype = "int64"} },
  wte = Embedding(V, C, { padding_idx = 0 }),
  ln_1 = LayerNorm(C),
  qkv = Linear(C, 3 * C),
  proj = Linear(C, C),
  mix = Linear(T, H * T, { bias = false }),   -- its weight, as (H, T, T), mixes positions per head
  ln_f = LayerNorm(C, { elementwise_affine = false }),
  forward = function(m, x)
    local qkv = m.qkv(m.ln_1(m.wte(x.idx)))                -- (B, T, 3C)
    local function heads(t)                                -- (B, T, C) -> (B, H, T, C/H)
      return transpose(reshape(t, -1, T, H, C // H), 1, 2)
    end
    local q = heads(slice(qkv, 2, 0, C))
    local k = heads(slice(qkv, 2, C, 2 * C))
    local half = sum(reshape(slice(qkv, 2, 2 * C, 3 * C), -1, T, 2, C // 2), 2)   -- (B, T, C/2): a middle dim summed
    local v = matmul(reshape(m.mix.weight, H, T, T), heads(cat({ half, half }, 2)))  -- (H, T, T) broadcast over the batch
    local y = scaled_dot_product_attention(q, k, v, { is_causal = true })          -- (B, H, T, C/H)
    y = reshape(permute(y, 0, 2, 1, 3), -1, T, C)
    y = relu(m.proj(y))
    y = transpose(softmax(transpose(y, 1, 2), 1), 1, 2)                            -- softmax over C, a middle dim
    local even = mean(reshape(y, -1, T, C // 2, 2), 3)                             -- (B, T, C/2)
    y = cat({ even, slice(y, 2, 1, C, 2) }, 2)                                     -- (B, T, C)
    local logits = matmul(m.ln_f(y), transpose(m.wte.weight, 0, 1))               -- (B, T, V): shared b
    return log_softmax(logits, -1)
  end,
}

fabric { accelerator = "cuda", precision = "32-true" }

train {
  data = Synthetic {
    fields = {
      idx = Tensor{T, dtype = "int64", dist = "randint", high = V},
      targets = Tensor{T, dtype = "int64", dist = "randint", high = V},
    },
  },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(transpose(m(b), 1, 2), b.targets) end,
  -- SGD: the keys' share of qkv.bias gets a zero gradient up to rounding (a constant
  -- added to every score of a row), which Adam would blow up to ±lr whatever its sign
  optimizer = SGD { lr = 0.1, momentum = 0.9 },
  max_steps = 20,
}
