-- tests/ops/rnn.lua — LSTM and GRU (batch_first): one layer, two layers, bidirectional,
-- without biases; the character-level language model's shape (Embedding → LSTM → Linear);
-- the final states (h_n, c_n) of each, batch first.
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
    local o1, s1 = m.lstm(h)                -- (B, 6, 8); h_n, c_n (B, 1, 8)
    local o2, s2 = m.lstm2(o1)              -- (B, 6, 10); h_n, c_n (B, 4, 5)
    local o3, h3 = m.gru(o2)                -- (B, 6, 14); h_n (B, 2, 7)
    local o4, h4 = m.gru2(o3)               -- (B, 6, 6); h_n (B, 2, 6)
    -- every final state reaches the loss: the last layer's h_n, the others' means
    local function avg(t) return mean(t, { 1, 2 }, { keepdim = true }) end   -- (B, 1, 1)
    local extra = slice(h4, 1, 1, 2) + avg(s1[1]) + avg(s1[2]) + avg(s2[1]) + avg(s2[2]) + avg(h3)
    return m.head(o4 + extra)               -- (B, 6, 11)
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
