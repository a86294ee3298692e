-- expect: tests/spec_fail/trainer_object.lua:7: loom has no Trainer: the loop's settings are train { ... } (loom help train)
model "Net" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
local trainer = Trainer { max_epochs = 3 }
