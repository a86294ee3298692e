-- tests/fuse/gelu_epilogue.lua — linear + GELU (tanh approximation) in cuBLASLt's
-- epilogue (tests/suite_cuda.sh, tests/suite_fuse_emu.sh): GELU's backward reads its
-- input, so the epilogue writes the pre-activation too (GELU_AUX_BIAS), and the linear's
-- output is stored; linear + exact GELU (cuBLASLt has only the approximation) stays two
-- kernels.  cuBLASLt computes this GELU itself: fused and unfused agree within rounding,
-- not bit for bit.
model "GeluEpilogue" {
  inputs = { x = Tensor{16} },
  net = Sequential { Linear(16, 32), GELU { approximate = "tanh" }, Linear(32, 32), GELU(), Linear(32, 1), Sigmoid() },
  forward = function(m, b) return m.net(b.x) end,
}

fabric { accelerator = "cuda", precision = "32-true" }

train {
  data = Synthetic {
    fields = {
      x = Tensor{16, dist = "uniform"},
      target = Tensor{1, dist = "uniform"},
    },
    size = 256,
  },
  batch_size = 32,
  loss = function(m, b) return bce(m(b), b.target) end,
  optimizer = AdamW { lr = 1e-3 },
  epochs = 1,
}
