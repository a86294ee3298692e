-- expect: tests/spec_fail/module_where_tensor_expected.lua:3: mse: argument 1 must be a tensor, got a module (call it on a tensor to get one)
model "Net" { inputs = { x = Tensor{4}, y = Tensor{2} }, fc = Linear(4, 2), forward = function(m, x) return m.fc(x.x) end }
train { data = Synthetic { fields = { x = Tensor{4}, y = Tensor{2} } }, batch_size = 2, loss = function(m, b) return mse(m, b.y) end, optimizer = SGD{}, epochs = 1 }
