-- expect: tests/spec_fail/linear_features.lua:6: Linear(8000, 128) expects 8000 input features, gets 8192 (128×8×8)
model "Net" {
  inputs = { img = Tensor{3, 128, 128} },
  body = Sequential {
    Conv2d(3, 128, 3, {padding = "same"}), MaxPool2d(16),
    Flatten(), Linear(8000, 128),
  },
  forward = function(m, x) return m.body(x.img) end,
}
