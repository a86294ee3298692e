-- expect: tests/ops/fail/batch_inside_module.lua:9: Conv1d(5, 3, 3): its input (5, B, 8) has the batch dimension at dim 1; it takes batch-first tensors (transpose(x, 0, 1) first)
model "Net" {
  inputs = { x = Tensor{5, 4} },
  lstm = LSTM(4, 8, { num_layers = 5, batch_first = true }),
  conv = Conv1d(5, 3, 3),
  forward = function(m, b)
    local out, state = m.lstm(b.x)
    -- h_n is (layers, B, H), PyTorch's layout: a module takes it only batch first
    return mean(m.conv(state[1]), 2)
  end,
}

fabric { accelerator = "cpu", precision = "32-true" }

train {
  data = Synthetic { fields = { x = Tensor{5, 4}, target = Tensor{5, 3} }, size = 8 },
  batch_size = 4,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
