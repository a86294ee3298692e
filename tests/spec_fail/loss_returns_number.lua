-- expect: tests/spec_fail/loss_returns_number.lua:3: train.loss must return a scalar tensor (use a reduction), got the number 3
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return m.fc(x.x) end }
train { data = Synthetic { fields = { x = Tensor{4}, y = Tensor{2} } }, batch_size = 1, loss = function(m, b) return 3 end, optimizer = SGD{}, epochs = 1 }
