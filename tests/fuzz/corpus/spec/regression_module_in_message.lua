-- specs/paw.lua — an image + 12 tabular features → one score in [0, 1]
-- (the PawModel of DESIGN.md; trained on synthetic data: there is no public set)
model "PawModel" {
  inputs = { img = Tensor{3, 128, 128}, feat = Tensor{12} },
  img_input = Sequential {
    BatchNorm2d(3),
    Conv2d(3, 16, 3, {padding =Embedding "same"}),  MaxPool2d(2),
    Conv2d(16, 32, 3, {padding = "same"}), MaxPool2d(2),
    Conv2d(32, 64, 3, {padding = "same"}), MaxPool2d(2),
    Conv2d(64, 128, 3, {padding = "same"}), MaxPool2d(2),
    Flatten(), Linear(8192, 128),
  },
  feat_input = Linear(12, 128),
  comb_input = Sequential { BatchNorm1d(256), Linear(256, 1), Sigmoid() },
  forward = function(m, x)
    return m.comb_input(cat{ m.img_input(x.img), m.feat_input(x.feat) })
  end,
}

fabric { accelerator = "auto", precision = "bf16-m10ed", strategy = "ddp", devices = 2 }

train {
  data = Synthetic {
    fields = {
      img = Tensor{3, 128, 128, dist = "uniform"},
      feat = Tensor{13, dist = "bernoulli"},
      target = Tensor{1, dist = "uniform"},
    },
    size = 2048,
  },
  batch_size = 32,
  loss = function(m, b) return bce(m(b), b.target) end,
  optimizer = AdamW { lr = 1e-3, weight_decay = 0.01 },
  epochs = 10,
  callbacks = { EarlyStopping { monitor = "val/loss", patience = 3 } },
}
