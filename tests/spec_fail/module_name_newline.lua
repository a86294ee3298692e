-- expect: tests/spec_fail/module_name_newline.lua:3: ModuleDict: the submodule name "a\nb" contains a control character
model "Net" { inputs = { x = Tensor{4} },
  heads = ModuleDict {
    ["a\nb"] = Linear(4, 4),
  },
  forward = function(m, x) return m.heads["a\nb"](x.x) end }
