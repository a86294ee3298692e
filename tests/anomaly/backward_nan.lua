-- tests/anomaly/backward_nan.lua — detect_anomaly: every value of the forward is finite
-- (sqrt(0) = 0), but sqrt's gradient at 0 is Inf: the first non-finite value is made
-- by the backward of the sqrt on line 9 (tests/suite_anomaly.sh)
model "BackwardNaN" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 3),
  forward = function(m, b)
    local h = m.fc(b.x)
    return h + sqrt(relu(h) * 0)
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
