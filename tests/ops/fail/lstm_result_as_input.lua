-- expect: tests/ops/fail/lstm_result_as_input.lua:6: Linear(8, 2) takes one input, gets 2 (LSTM and GRU return the output and the final states, as PyTorch: local out, state = m.lstm(x))
model "Net" {
  inputs = { x = Tensor{5, 4} },
  lstm = LSTM(4, 8, { batch_first = true }),
  head = Linear(8, 2),
  forward = function(m, b) return m.head(m.lstm(b.x)) end,   -- PyTorch's Linear refuses the tuple too
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{5, 4}, target = Tensor{5, 2} }, size = 8 },
  batch_size = 4,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
