-- expect: tests/spec_fail/setting_twice.lua:11: 'epochs' is given twice in this table (first on line 10); Lua would keep only the last
-- decoys that are not a table's keys: { x = 1, x = 2 } in a comment,
local s = [[ { y = 1, y = 2 } ]]   -- a long string,
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2),
  -- and a multiple assignment inside a method
  forward = function(m, x) local a, b = 1, 2; if a == b then a = 3 end; return m.fc(x.x) end }
train {
  data = Synthetic { fields = { x = Tensor{4}, y = Tensor{2} }, size = 64 }, batch_size = 8,
  loss = function(m, b) return mse_loss(m(b), b.y) end, optimizer = SGD { lr = 0.1 },
  epochs = 1,
  epochs = 3,
}
