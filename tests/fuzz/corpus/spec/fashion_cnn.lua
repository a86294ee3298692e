-- specs/fashion_cnn.lua — two conv blocks + a 2-layer head on Fashion-MNIST
model "FashionCNN" {
  inputs = { image = Tensor{1, 28, 28} },
  features = Sequential {
    Conv2d(1, 32, 3, {padding = "same"}), BatchNorm2d(32), ReLU(), MaxPool2d(2),   -- 32×14×14
    Conv2d(32, 64, 3, {padding = "same"}), BatchNorm2d(64), ReLU(), MaxPool2d(2),  -- 64×7×7
  },
  classifier = Sequential {
    Flatten(), Linear(3136, 128), ReLU(), Linear(128, 10),
  },
  forward = function(m, x) return m.classifier(m.features(x.image)) end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = FashionMNIST { val_split = 5000 },
  batch_size = 128,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = AdamW { lr = 1e-3, weight_decay = 0.01 },
  scheduler = WarmupCosine { warmup_steps = 0 },   -- cosine decay to 0 over the run
  epochs = 10,
  callbacks = {
    EarlyStopping { monitor = "val/acc", mode = "max", patience = 3 },
    ModelCheckpoint { monitor = "val/acc", mode = "max", save_top_k = 1, save_last = true },
  },
  loggers = { CSVLogger { root_dir = "logs" } },
}
