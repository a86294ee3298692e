-- expect: tests/spec_fail/optimizer_not_called.lua:3: train.optimizer is SGD itself, not called: write SGD { ... }
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return m.fc(x.x) end }
train { data = FashionMNIST {}, batch_size = 1, loss = function(m, b) return m(b) end, optimizer = SGD, epochs = 1 }
