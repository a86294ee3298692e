-- expect: tests/spec_fail/csv_names_without_header.lua:8: CSV.columns: 'a' is a name, but header = false: give 0-based column indices
model "Net" {
  inputs = { x = Tensor{2} },
  fc = Linear(2, 2),
  forward = function(m, b) return m.fc(b.x) end,
}
train {
  data = CSV { train = "d.csv", header = false, columns = { "a", 1 }, target = 2, classes = 2 },
  batch_size = 4,
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 1,
}
