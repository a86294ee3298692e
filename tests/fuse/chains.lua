-- tests/fuse/chains.lua — the fuse pass's cases (tests/suite_cuda.sh reads the
-- fuse_plan.tsv of its CUDA program):
--  - tanh → * 0.5 → 2 - · → silu → + r → gelu → dropout → / 3 is one chain: one kernel
--    forward, one backward; r (Linear b's output) is an extra operand made before it;
--  - silu's output has two readers, the chain and Linear c: it is stored, the chain
--    goes on; every other value of the chain but the last (read by Linear head) lives
--    in registers, and so do their gradients;
--  - p * c.bias broadcasts a (2) parameter over the batch: its gradient is a reduction,
--    so the mul stays a kernel of its own; the add after it and the loss's sigmoid are
--    a chain of two.
model "FuseChains" {
  inputs = { x = Tensor{16} },
  a = Linear(16, 32),
  b = Linear(32, 32),
  c = Linear(32, 2),
  drop = Dropout(0.25),
  head = Linear(32, 2),
  forward = function(m, batch)
    local u = m.a(batch.x)
    local r = m.b(u)
    local h = 2 - tanh(u) * 0.5
    local s = silu(h)
    local z = m.drop(gelu(s + r)) / 3
    return m.head(z) + m.c(s) * m.c.bias
  end,
}

fabric { accelerator = "cuda", precision = "32-true" }

train {
  data = Synthetic {
    fields = {
      x = Tensor{16, dist = "uniform"},
      target = Tensor{2, dist = "uniform"},
    },
    size = 256,
  },
  batch_size = 32,
  loss = function(m, b) return bce(sigmoid(m(b)), b.target) end,
  optimizer = AdamW { lr = 1e-3 },
  epochs = 1,
}
