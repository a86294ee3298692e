-- tests/anomaly/forward_nan.lua — detect_anomaly: log of a negative number makes a NaN
-- in the forward, at the log on line 8 (tests/suite_anomaly.sh)
model "ForwardNaN" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 3),
  forward = function(m, b)
    local h = m.fc(b.x)
    return log(h * h + 0.5) + log(h - 100)
  end,
}

fabric { accelerator = "cpu", precision = "32-true", detect_anomaly = true }

train {
  data = Synthetic { fields = { x = Tensor{4, dist = "normal"}, target = Tensor{3, dist = "uniform"} }, size = 16 },
  batch_size = 4,
  loss = function(m, b) return mse(m(b), b.target) end,
  optimizer = SGD { lr = 0.01 },
  epochs = 1,
}
