-- tests/ops/rnn.lua — LSTM and GRU (batch_first): one layer, two layers, bidirectional,
-- without biases; the character-level language model's shape (Embedding → LSTM → Linear).
model "Rnn" {
  inputs = { x = Tensor{6, dtype = "int64", high = 11} },
  embed = Embedding(11, 6),
  lstm = LSTM(6, 8, { batch_first = true }),
  lstm2 = LSTM(8, 5, { num_layers = 2, bidirectional = true, batch_first = true }),
  gru = GRU(10, 7, { batch_first = true, bidirectional = true }),
  gru2 = GRU(14, 6, { num_layers = 2, bias = false, batch_first = true }),
  head = Linear(6, 11),
  forward = function(m, b)
    local h = m.embed(b.x)                  -- (B, 6, 6)
    h = m.gru2(m.gru(m.lstm2(m.lstm(h))))   -- (B, 6, 6)
    return m.head(h)                        -- (B, 6, 11)
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{6, dtype = "int64", dist = "randint", high = 11},
                                target = Tensor{6, dtype = "int64", dist = "randint", high = 11} }, size = 64 },
  batch_size = 8,
  loss = function(m, b) return cross_entropy(transpose(m(b), 1, 2), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
