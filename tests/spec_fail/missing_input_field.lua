-- expect: tests/spec_fail/missing_input_field.lua:5: the model's input has no field 'imgae' (did you mean 'image'?) (it has: image)
model "Net" {
  inputs = { image = Tensor{1, 28, 28} },
  net = Sequential { Flatten(), Linear(784, 10) },
  forward = function(m, x) return m.net(x.imgae) end,
}
