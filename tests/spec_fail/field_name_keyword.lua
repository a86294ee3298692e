-- expect: tests/spec_fail/field_name_keyword.lua:5: Synthetic.fields: the field name "int" is not a plain name (letters, digits and '_', not a C keyword, not starting with a digit or with '_' and a capital)
model "Net" { inputs = { int = Tensor{4} }, net = Linear(4, 4),
  forward = function(m, x) return m.net(x.int) end }
train {
  data = Synthetic { fields = { int = Tensor{4}, y = Tensor{4} } }, batch_size = 8,
  loss = function(m, b) return mse_loss(m(b), b.y) end, optimizer = SGD { lr = 0.1 }, epochs = 1 }
