-- expect: tests/spec_fail/train_twice.lua:4: train { ... } is given twice
model "Net" { inputs = { x = Tensor{4}, y = Tensor{2} }, fc = Linear(4, 2), forward = function(m, x) return m.fc(x.x) end }
train { data = Synthetic { fields = { x = Tensor{4}, y = Tensor{2} } }, batch_size = 2, loss = function(m, b) return mse(m(b), b.y) end, optimizer = SGD{}, epochs = 1 }
train { data = Synthetic { fields = { x = Tensor{4}, y = Tensor{2} } }, batch_size = 2, loss = function(m, b) return mse(m(b), b.y) end, optimizer = SGD{}, epochs = 1 }
