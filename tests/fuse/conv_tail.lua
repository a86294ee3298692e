-- tests/fuse/conv_tail.lua — producers' elementwise tails (tests/suite_cuda.sh and
-- tests/suite_fuse_emu.sh):
--  - conv → + x (residual) → ReLU → Dropout goes into the store of the conv's output
--    kernel, x an extra operand of it.  The sum and ReLU's output live in registers;
--    the conv's output is still stored, because the tail's backward recomputes ReLU's
--    output (its backward reads it) from it;
--  - BatchNorm → ReLU goes into BN's kernel: BN's backward reads its input, not its
--    output, so BN's output lives in registers;
--  - Linear → ReLU is cuBLASLt's epilogue;
--  - * w (4, 1, 1) and / w (1, 1, 4) broadcast a parameter over (B, 4, 8, 4): each their
--    own kernel, their gradients reductions over the broadcast dims (batch included).
model "ConvTail" {
  inputs = { x = Tensor{4, 8, 4} },
  conv = Conv2d(4, 4, 3, {padding = "same"}),
  drop = Dropout(0.1),
  bn = BatchNorm2d(4),
  head = Sequential { Flatten(), Linear(128, 32), ReLU(), Linear(32, 10) },
  forward = function(m, b)
    local h = m.drop(relu(m.conv(b.x) + b.x)) * reshape(m.bn.weight, 4, 1, 1) / reshape(m.bn.weight, 1, 1, 4)
    return m.head(relu(m.bn(h)))
  end,
}

fabric { accelerator = "cuda", precision = "32-true" }

train {
  data = Synthetic {
    fields = {
      x = Tensor{4, 8, 4, dist = "uniform"},
      label = Tensor{dtype = "int64", dist = "randint", high = 10},
    },
    size = 128,
  },
  batch_size = 16,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = SGD { lr = 0.1, momentum = 0.9 },
  epochs = 1,
}
