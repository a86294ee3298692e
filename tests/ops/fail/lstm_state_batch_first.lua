-- expect: tests/ops/fail/lstm_state_batch_first.lua:10: LSTM(4, 8) expects h_0 of shape (2, B, 8) (layers · directions, batch, hidden_size), gets (B, 2, 8)
model "Net" {
  inputs = { x = Tensor{5, 4} },
  lstm = LSTM(4, 8, { num_layers = 2, batch_first = true }),
  lstm2 = LSTM(4, 8, { num_layers = 2, batch_first = true }),
  head = Linear(8, 2),
  forward = function(m, b)
    local out, state = m.lstm(b.x)
    -- initial states are PyTorch's (layers, B, H), not batch first
    local out2 = m.lstm2(b.x, { transpose(state[1], 0, 1), transpose(state[2], 0, 1) })
    return m.head(out2 + out)
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{5, 4}, target = Tensor{5, 2} }, size = 8 },
  batch_size = 4,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
