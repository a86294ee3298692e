-- expect: tests/spec_fail/tail_call_forward.lua:7: Linear(190, 2) expects 190 input features, gets 192 (3×8×8)
local function head(m, h)
  return m.fc(h)
end
model "Net" {
  inputs = { img = Tensor{3, 8, 8} },
  fc = Linear(190, 2),
  forward = function(m, x)
    local h = flatten(x.img, 1)
    return head(m, h)
  end,
}
