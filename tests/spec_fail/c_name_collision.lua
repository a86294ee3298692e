-- expect: tests/spec_fail/c_name_collision.lua:5: the tensors "net.0.weight" and "net_0.weight" would have the same name in the generated C (net_0_weight): rename a module
-- PyTorch would take both names; the generated C would declare one variable twice
model "Net" { inputs = { x = Tensor{4} },
  net = Sequential { Linear(4, 4) },
  net_0 = Linear(4, 4),
  forward = function(m, x) return m.net_0(m.net(x.x)) end }
