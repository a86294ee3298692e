-- tests/cuda_specs/freeze.lua — train.freeze on the CUDA backend: a frozen conv (its
-- input's gradient still flows to the conv below, which trains), frozen BatchNorm and
-- LayerNorm affine parameters and a frozen bias, with AdamW's weight decay, which a
-- frozen parameter must not get either (the update kernel's SKIP_RUN runs), and a
-- parameter group.  tests/suite_ops_emu.sh runs it under the CUDA emulator against the
-- CPU program.
model "FreezeNet" {
  inputs = { x = Tensor{2, 6, 6} },
  conv1 = Conv2d(2, 4, 3, { padding = 1 }),
  conv2 = Conv2d(4, 4, 3, { padding = 1 }),
  bn = BatchNorm2d(4),
  fc = Linear(144, 8),
  ln = LayerNorm(8),
  head = Linear(8, 3),
  forward = function(m, b)
    local h = relu(m.bn(m.conv2(relu(m.conv1(b.x)))))
    return m.head(gelu(m.ln(m.fc(flatten(h, 1)))))
  end,
}

fabric { accelerator = "cuda", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{2, 6, 6, dist = "normal"}, target = Tensor{dtype = "int64", dist = "randint", high = 3} }, size = 32 },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = AdamW { lr = 1e-2, weight_decay = 0.1, groups = { { params = "^head%.", lr = 3e-3 } } },
  freeze = { "^conv2%.", "^bn%.", "^ln%.weight", "^fc%.bias" },
  max_steps = 20,
}
