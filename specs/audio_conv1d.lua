-- specs/audio_conv1d.lua — M5 (Dai et al. 2017, "Very deep convolutional neural networks
-- for raw waveforms"), the raw-audio classifier of torchaudio's speech-command tutorial:
-- a wide strided Conv1d front end over the waveform, four Conv1d → BatchNorm1d → ReLU →
-- MaxPool1d stages, global average pooling (AdaptiveAvgPool1d(1)) and a linear layer
-- to log-probabilities over 35 classes (Speech Commands' words).  The names are the
-- tutorial's.  The data are synthetic one-second signals at 8 kHz (1×8000 samples);
-- point `data` at your own (Npy { fields = { waveform = "x.npy", label = "y.npy" } }).
local N_CLASSES, CH = 35, 32

model "M5" {
  inputs = { waveform = Tensor{1, 8000} },
  conv1 = Conv1d(1, CH, 80, { stride = 16 }),   -- (B, 32, 496): 5 ms windows, 2 ms apart
  bn1 = BatchNorm1d(CH),
  pool1 = MaxPool1d(4),                         -- 124
  conv2 = Conv1d(CH, CH, 3),
  bn2 = BatchNorm1d(CH),
  pool2 = MaxPool1d(4),                         -- 30
  conv3 = Conv1d(CH, 2 * CH, 3),
  bn3 = BatchNorm1d(2 * CH),
  pool3 = MaxPool1d(4),                         -- 7
  conv4 = Conv1d(2 * CH, 2 * CH, 3),
  bn4 = BatchNorm1d(2 * CH),
  pool4 = MaxPool1d(4),                         -- 1
  gap = AdaptiveAvgPool1d(1),
  fc1 = Linear(2 * CH, N_CLASSES),
  forward = function(m, b)
    local x = m.pool1(relu(m.bn1(m.conv1(b.waveform))))
    x = m.pool2(relu(m.bn2(m.conv2(x))))
    x = m.pool3(relu(m.bn3(m.conv3(x))))
    x = m.pool4(relu(m.bn4(m.conv4(x))))
    return log_softmax(m.fc1(flatten(m.gap(x), 1)), 1)   -- (B, 35) log-probabilities
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic {
    fields = {
      waveform = Tensor{1, 8000, dist = "normal"},
      label = Tensor{dtype = "int64", dist = "randint", high = N_CLASSES},
    },
    size = 8192,
  },
  batch_size = 256,
  loss = function(m, b) return nll_loss(m(b), b.label) end,
  optimizer = Adam { lr = 0.01, weight_decay = 1e-4 },
  scheduler = StepLR { step_size = 20, gamma = 0.1 },   -- per epoch
  epochs = 40,
}
