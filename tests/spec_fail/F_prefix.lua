-- expect: tests/spec_fail/F_prefix.lua:4: 'F' is not available in a spec: torch.nn.functional's functions have no prefix (F.relu → relu)
model "Net" {
  inputs = Tensor{4},
  forward = function(m, x) return F.relu(x) end,
}
