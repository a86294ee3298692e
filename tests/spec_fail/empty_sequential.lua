-- expect: tests/spec_fail/empty_sequential.lua:6: train.loss does not depend on any parameter of the model: there is nothing to train (does the model have layers, and does the loss use its output?)
model "Net" { inputs = { x = Tensor{4} }, net = Sequential {},
  forward = function(m, x) return m.net(x.x) end }
train {
  data = Synthetic { fields = { x = Tensor{4}, y = Tensor{4} } }, batch_size = 8,
  loss = function(m, b) return mse_loss(m(b), b.y) end, optimizer = SGD { lr = 0.1 }, epochs = 1 }
