-- expect: tests/spec_fail/runtime_nil_call.lua:7: attempt to call a nil value (local 'act')
model "Net" {
  inputs = { x = Tensor{4} },
  fc = Linear(4, 2),
  forward = function(m, x)
    local act
    return act(m.fc(x.x))
  end,
}
