-- expect: tests/spec_fail/module_name_dot.lua:5: Net: the submodule name "net.0" contains '.', which separates the parts of a tensor's name (as in net.0.weight)
-- net.0.weight would be both net's first layer's and this one's
model "Net" { inputs = { x = Tensor{4} },
  net = Sequential { Linear(4, 4) },
  ["net.0"] = Linear(4, 4),
  forward = function(m, x) return m.net(x.x) end }
