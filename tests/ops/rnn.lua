-- tests/ops/rnn.lua — LSTM and GRU (batch_first): one layer, two layers, bidirectional,
-- without biases; the character-level language model's shape (Embedding → LSTM → Linear);
-- the final states (h_n, c_n) of each, (layers · directions, B, H) as PyTorch's, and
-- initial states passed in: one LSTM's {h_n, c_n} starts another, a GRU's h_n a GRU,
-- and a state computed from the batch (so that its gradient flows back into a Linear).
model "Rnn" {
  inputs = { x = Tensor{6, dtype = "int64", high = 11} },
  embed = Embedding(11, 6),
  lstm = LSTM(6, 8, { batch_first = true }),
  lstm2 = LSTM(8, 5, { num_layers = 2, bidirectional = true, batch_first = true }),
  lstm3 = LSTM(10, 5, { num_layers = 2, bidirectional = true, batch_first = true }),
  gru = GRU(10, 7, { batch_first = true, bidirectional = true }),
  gru2 = GRU(14, 6, { num_layers = 2, bias = false, batch_first = true }),
  gru3 = GRU(6, 6, { num_layers = 2, batch_first = true }),
  h0 = Linear(6, 14),
  head = Linear(6, 11),
  forward = function(m, b)
    local h = m.embed(b.x)                  -- (B, 6, 6)
    local o1, s1 = m.lstm(h)                -- (B, 6, 8); h_n, c_n (1, B, 8)
    local o2, s2 = m.lstm2(o1)              -- (B, 6, 10); h_n, c_n (4, B, 5)
    local o2b = m.lstm3(o2, s2)             -- (B, 6, 10), starting from lstm2's final states
    -- a GRU's h_0 from the batch: (2, B, 7), each row a Linear of the first step's embedding
    local g0 = transpose(reshape(m.h0(slice(h, 1, 0, 1)), "B", 2, 7), 0, 1)   -- (2, B, 7)
    local o3, h3 = m.gru(o2 + o2b, tanh(g0))  -- (B, 6, 14); h_n (2, B, 7)
    local o4, h4 = m.gru2(o3)               -- (B, 6, 6); h_n (2, B, 6)
    local o5, h5 = m.gru3(o4, h4)           -- (B, 6, 6), starting from gru2's h_n
    -- every final state reaches the loss: the last GRU's h_n (its top layer, batch first), the others' means
    local function avg(t) return transpose(mean(mean(t, 2, { keepdim = true }), 0, { keepdim = true }), 0, 1) end   -- (B, 1, 1)
    local extra = transpose(slice(h5, 0, 1, 2), 0, 1) + avg(s1[1]) + avg(s1[2]) + avg(s2[1]) + avg(s2[2]) + avg(h3)
    return m.head(o5 + extra)               -- (B, 6, 11)
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
