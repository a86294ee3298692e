-- expect: tests/spec_fail/torch_prefix.lua:4: 'torch' is not available in a spec: loom's names have no prefix (torch.cat → cat, torch.nn.Linear → Linear)
model "Net" {
  inputs = Tensor{4},
  forward = function(m, x) return torch.cat({x, x}, 1) end,
}
