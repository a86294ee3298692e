-- expect: tests/spec_fail/unknown_global_in_forward.lua:6: unknown name 'sigmod' (did you mean 'sigmoid'?)
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x)
    return sigmod(m.fc(x.x))
  end,
}
