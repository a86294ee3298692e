-- tests/cuda_specs/conv_losses.lua — the CUDA backend's window ops and losses: grouped
-- and depthwise convolution, dilated max pooling with padding, average pooling with
-- ceil_mode and count_include_pad = false, flatten, and cross entropy with probability
-- targets (label smoothing).  tests/suite_cuda.sh also builds it with the loss swapped
-- for bce_with_logits, mse (sum) and l1 (none, then mean); tests/suite_ops_emu.sh runs
-- them under the CUDA emulator against the CPU program.
model "ConvLosses" {
  inputs = { img = Tensor{4, 12, 12} },
  features = Sequential {
    Conv2d(4, 8, 3, { padding = 1, groups = 2 }), ReLU(),
    Conv2d(8, 8, 3, { padding = 1, groups = 8, bias = false }),
    MaxPool2d(3, { stride = 2, padding = 1, dilation = 2 }), ReLU(),
    AvgPool2d(3, { stride = 2, padding = 1, ceil_mode = true, count_include_pad = false }),
    Flatten(), Linear(72, 10),
  },
  forward = function(m, x) return m.features(x.img) end,
}

fabric { accelerator = "cuda", precision = "32-true" }

train {
  data = Synthetic {
    fields = {
      img = Tensor{4, 12, 12, dist = "normal"},
      target = Tensor{10, dist = "uniform"},
    },
  },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(m(b), b.target, { label_smoothing = 0.1 }) end,
  optimizer = AdamW { lr = 1e-3 },
  max_steps = 20,
}
