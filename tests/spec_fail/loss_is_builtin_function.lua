-- expect: tests/spec_fail/loss_is_builtin_function.lua:3: train.loss is mse itself; write a function of the model and the batch: loss = function(m, b) return mse(m(b), b.target) end
model "Net" { inputs = { x = Tensor{4}, y = Tensor{2} }, fc = Linear(4, 2), forward = function(m, x) return m.fc(x.x) end }
train { data = Synthetic { fields = { x = Tensor{4}, y = Tensor{2} } }, batch_size = 2, loss = mse, optimizer = SGD{}, epochs = 1 }
