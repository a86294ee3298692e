-- specs/fashion_mlp.lua — a 784-256-128-10 multilayer perceptron on Fashion-MNIST
model "FashionMLP" {
  inputs = { image = Tensor{1, 28, 28} },
  net = Sequential {
    Flatten(),
    Linear(784, 256), ReLU(),
    Linear(256, 128), ReLU(),
    Linear(128, 10),
  },
  forward = function(m, x) return m.net(x.image) end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = FashionMNIST { val_split = 5000 },
  batch_size = 128,
  loss = function(m, b) return cross_entropy(m(b), b.label) end,
  optimizer = AdamW { lr = 1e-3, weight_decay = 0.01 },
  scheduler = WarmupCosine { warmup_steps = 0 },   -- cosine decay to 0 over the run
  epochs = 5,
  loggers = { CSVLogger { root_dir = "logs" } },
}
