-- docs: the spec language's reference, rendered from the definitions themselves
-- (nn.doc, tensor.doc, spec.doc): `loom help [NAME]` and docs/SPEC.md (`ninja docs`).
-- Each entry has a one-line summary, its PyTorch/Lightning/Fabric counterpart and an
-- example; docs.example_spec makes each example a whole spec, which tests/suite_docs.sh
-- builds, so the reference cannot drift from what loom accepts.
local nn = require "nn"
local tensor = require "tensor"
local spec = require "spec"
local util = require "util"

local docs = {}

-- Sections in the order the reference lists them.
docs.SECTIONS = {
  { key = "block", title = "Declarations and blocks" },
  { key = "module", title = "Modules" },
  { key = "function", title = "Functions" },
  { key = "loss", title = "Losses" },
  { key = "init", title = "Initialisation (train.init)" },
  { key = "optimizer", title = "Optimizers" },
  { key = "scheduler", title = "Schedulers" },
  { key = "callback", title = "Callbacks" },
  { key = "logger", title = "Loggers" },
  { key = "data", title = "Data sources" },
  { key = "lua", title = "Lua" },
}

local function show_default(v)
  if v == nil then return nil end
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = show_default(x) end
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  return tostring(v)
end

-- A module's call as PyTorch's signature reads: Linear(in_features, out_features, bias=true)
local function module_call(name, sig)
  if not sig then return nil end
  local parts = {}
  for _, s in ipairs(sig) do
    if s.required then parts[#parts + 1] = s[1]
    else
      local d = s[3]
      parts[#parts + 1] = s[1] .. "=" .. (d == false and (s[1] == "stride" and "kernel_size" or "None") or show_default(d) or "None")
    end
  end
  return name .. "(" .. table.concat(parts, ", ") .. ")"
end

-- The settings of a block or constructor, sorted: { name, default, doc, required }.
local function settings_of(schema)
  if not schema then return nil end
  local out = {}
  for _, k in ipairs(util.sorted_keys(schema)) do
    local s = schema[k]
    out[#out + 1] = { name = k, default = show_default(s[2]), doc = s.doc, required = s.required }
  end
  return out
end

local LUA_SUMMARY = "specs are Lua 5.4 run in a sandbox: these standard names are available "
  .. "(no io, os, require, load, debug, getmetatable); print writes to stderr"

-- All entries, by name: { name, section, summary, torch, example, call, settings, alias_of, ... }.
function docs.entries()
  local e = {}
  for name, d in pairs(nn.doc) do
    e[name] = { name = name, section = "module", summary = d.summary, torch = d.torch, example = d.example,
                input = d.input, input_dtype = d.input_dtype, apply = d.apply, call = module_call(name, d.signature) }
  end
  for name, d in pairs(tensor.doc) do
    if d.alias_of then
      e[name] = { name = name, alias_of = d.alias_of }
    else
      e[name] = { name = name, section = d.target and "loss" or "function", call = d[1], summary = d[2], torch = d.torch,
                  example = d.example, input = d.input, target = d.target, mask = d.mask }
    end
  end
  for name, d in pairs(spec.doc) do
    e[name] = { name = name, section = d.kind, summary = d.summary, torch = d.torch, example = d.example,
                settings = settings_of(d.schema) }
  end
  for name, d in pairs(e) do
    if d.alias_of then
      local of = e[d.alias_of]
      d.section, d.summary, d.torch = of.section, "the same as " .. d.alias_of, of.torch
    end
  end
  local _, lua_names = spec.environment()
  e.Lua = { name = "Lua", section = "lua", summary = LUA_SUMMARY, torch = "Python's builtins",
            covers = lua_names, example = "local widths = {}; for i = 1, 3 do widths[i] = 1 << (i + 2) end" }
  return e
end

-- The entry that documents `name` (an entry's own name, or a Lua name the Lua entry covers).
function docs.find(name, entries)
  entries = entries or docs.entries()
  if entries[name] then return entries[name] end
  for _, c in ipairs(entries.Lua.covers) do if c == name then return entries.Lua end end
  return nil
end

-- The names of a section's entries, sorted.
local function names_in(entries, key)
  local out = {}
  for name, d in pairs(entries) do if d.section == key then out[#out + 1] = name end end
  table.sort(out, function(a, b) return a:lower() < b:lower() or (a:lower() == b:lower() and a < b) end)
  return out
end

---------------------------------------------------------------------------
-- Examples as whole specs.

local BASE_MODEL = [[
model "Example" {
  inputs = { x = Tensor{4} },
  net = Linear(4, 3),
  forward = function(m, b) return m.net(b.x) end,
}
]]
local CLASS_DATA = 'Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} }, size = 64, val_size = 16 }'
local FLOAT_DATA = 'Synthetic { fields = { x = Tensor{4}, target = Tensor{3, dist = "uniform"} }, size = 64, val_size = 16 }'

-- train { ... } with the base settings, `slots` replacing or adding some
local function base_train(slots)
  local s = { data = CLASS_DATA, batch_size = "8", loss = "function(m, b) return cross_entropy(m(b), b.target) end",
              optimizer = "SGD { lr = 0.1 }", epochs = "1" }
  for k, v in pairs(slots or {}) do s[k] = v end
  local lines = {}
  for _, k in ipairs(util.sorted_keys(s)) do lines[#lines + 1] = "  " .. k .. " = " .. s[k] .. "," end
  return "train {\n" .. table.concat(lines, "\n") .. "\n}\n"
end

local function shape_text(shape) return table.concat(shape, ", ") end

local function body(example)
  if example:find("return", 1, true) then return example end
  return "return " .. example
end

-- A model of one input x (per-sample `decl`, Tensor{...} text) whose forward is `body`,
-- after a Linear on x's last dimension (so that every example has a parameter to
-- train; not for integer inputs), and a train block whose loss is the output's mean:
-- the example becomes a whole training program.
local function model_on_x(decl, last, body_text, extra_fields, int_input)
  local pre = int_input and "" or string.format("  pre = Linear(%d, %d),\n", last, last)
  local first = int_input and "" or "x = m.pre(x); "
  return string.format('model "Example" {\n  inputs = %s,\n%s%s  forward = function(m, x) %s%s end,\n}\n',
      decl, pre, extra_fields or "", first, body_text)
    .. base_train({ data = "Synthetic { fields = { x = " .. decl .. " }, size = 64, val_size = 16 }",
                    loss = "function(m, b) return mean(m(b.x)) end" })
end

-- The spec that builds entry `d`'s example: a whole training program, which the docs
-- suite generates (nil for an alias: its target's is built), and the files it needs
-- beside it ({ name = text }, or nil).
function docs.example_spec(d)
  if d.alias_of then return nil end
  local ex, sec = d.example, d.section
  if d.name == "autoregress" then   -- a bigram model that samples
    return 'model "Example" {\n  inputs = { idx = Tensor{8, dtype = "int64"} },\n  wte = Embedding(256, 16),\n'
      .. '  head = Linear(16, 256),\n  forward = function(m, x) return m.head(m.wte(x.idx)) end,\n'
      .. '  generate = function(m, x) return ' .. ex .. ' end,\n}\n'
      .. base_train({ data = 'Synthetic { fields = { idx = Tensor{8, dtype = "int64", dist = "randint", high = 256}, '
                        .. 'targets = Tensor{8, dtype = "int64", dist = "randint", high = 256} }, size = 64, val_size = 16 }',
                      loss = "function(m, b) return cross_entropy(transpose(m(b), 1, 2), b.targets) end" })
  elseif sec == "module" then
    local int = d.input_dtype == "int64"
    local decl = "Tensor{" .. shape_text(d.input) .. (int and ', dtype = "int64", dist = "randint", high = 10' or "") .. "}"
    return model_on_x(decl, d.input[#d.input], d.apply or "return m.layer(x)", "  layer = " .. ex .. ",\n", int)
  elseif sec == "function" and d.mask then
    -- where / masked_fill: the batch also holds an integer mask b.mask of x's shape
    local decl = "Tensor{" .. shape_text(d.input) .. "}"
    local mask = "Tensor{" .. shape_text(d.input) .. ', dtype = "int64", dist = "randint", high = 2}'
    return string.format('model "Example" {\n  inputs = { x = %s, mask = %s },\n  pre = Linear(%d, %d),\n' ..
        '  forward = function(m, b) local x = m.pre(b.x); %s end,\n}\n', decl, mask, d.input[#d.input], d.input[#d.input], body(ex))
      .. base_train({ data = "Synthetic { fields = { x = " .. decl .. ", mask = " .. mask .. " }, size = 64, val_size = 16 }",
                      loss = "function(m, b) return mean(m(b)) end" })
  elseif sec == "function" then
    return model_on_x("Tensor{" .. shape_text(d.input) .. "}", d.input[#d.input], body(ex))
  elseif d.name == "accuracy" then   -- a metric: train.log's, not a loss
    return BASE_MODEL .. base_train({ log = "function(m, b, out) return { hits = " .. ex:gsub("m%(b%)", "out") .. " } end" })
  elseif sec == "loss" then
    return BASE_MODEL .. base_train({ data = d.target == "float" and FLOAT_DATA or CLASS_DATA,
                                      loss = "function(m, b) return " .. ex .. " end" })
  elseif sec == "init" then return BASE_MODEL .. base_train({ init = "function(name, p) " .. ex .. " end" })
  elseif sec == "optimizer" then return BASE_MODEL .. base_train({ optimizer = ex })
  elseif sec == "scheduler" then return BASE_MODEL .. base_train({ scheduler = ex, optimizer = "SGD { lr = 0.1, momentum = 0.9 }" })
  elseif sec == "callback" then return BASE_MODEL .. base_train({ callbacks = "{ " .. ex .. " }" })
  elseif sec == "logger" then return BASE_MODEL .. base_train({ loggers = "{ " .. ex .. " }" })
  elseif sec == "hooks" then
    -- the example names my_hooks.c beside the spec: the suite writes this file there
    return BASE_MODEL .. base_train({ hooks = ex }), { ["my_hooks.c"] =
      '#include "loom_hooks.h"\n#include <stdio.h>\n'
      .. 'void my_end(const loom_hook_info *info) { printf("trained %lld steps\\n", (long long)info->step); }\n' }
  elseif sec == "data" and d.name == "FashionMNIST" then
    return 'model "Example" {\n  inputs = { image = Tensor{1, 28, 28} },\n  net = Sequential { Flatten(), Linear(784, 10) },\n'
      .. '  forward = function(m, b) return m.net(b.image) end,\n}\n'
      .. base_train({ data = ex, loss = "function(m, b) return cross_entropy(m(b), b.label) end" })
  elseif sec == "data" and d.name == "ImageFolder" then
    return 'model "Example" {\n  inputs = { image = Tensor{3, 32, 32} },\n  net = Sequential { Flatten(), Linear(3072, 10) },\n'
      .. '  forward = function(m, b) return m.net(b.image) end,\n}\n'
      .. base_train({ data = ex, loss = "function(m, b) return cross_entropy(m(b), b.label) end" })
  elseif sec == "data" and d.name == "Tokens" then   -- a bigram model over the example's context of 8
    return 'model "Example" {\n  inputs = { idx = Tensor{8, dtype = "int64"} },\n  wte = Embedding(256, 16),\n'
      .. '  head = Linear(16, 256),\n  forward = function(m, b) return m.head(m.wte(b.idx)) end,\n}\n'
      .. base_train({ data = ex, loss = "function(m, b) return cross_entropy(transpose(m(b), 1, 2), b.targets) end" })
  elseif sec == "data" then return BASE_MODEL .. base_train({ data = ex })
  elseif d.name == "fabric" then return BASE_MODEL .. base_train() .. ex .. "\n"
  elseif d.name == "train" then return BASE_MODEL .. ex .. "\n"
  elseif d.name == "model" then return ex .. "\n" .. base_train()
  elseif d.name == "Module" then
    return ex .. "\n" .. model_on_x("Tensor{8, 6, 6}", 6, "return m.block(x)", "  block = block,\n")
  elseif d.name == "Tensor" then
    return model_on_x(ex, 32, "return flatten(x, 1)")
  elseif d.name == "nn" then
    return model_on_x("Tensor{4}", 4, "return m.net(x)", "  net = " .. ex .. ",\n")
  elseif d.name == "Lua" then
    return ex .. "\n" .. model_on_x("Tensor{4}", 4, "return m.net(x)", "  net = Linear(4, widths[3]),\n")
  end
  error("docs: no example harness for " .. tostring(d.name) .. " (section " .. tostring(sec) .. ")")
end

---------------------------------------------------------------------------
-- Rendering.

local function indent(text, pad)
  return pad .. text:gsub("\n", "\n" .. pad)
end

-- `loom help NAME`
function docs.text(d)
  if d.alias_of then
    return string.format("%s: the same as %s (loom help %s)\n", d.name, d.alias_of, d.alias_of)
  end
  local out = { string.format("%s — %s", d.name, d.summary) }
  out[#out + 1] = "  counterpart: " .. d.torch
  if d.call then out[#out + 1] = "  call: " .. d.call end
  if d.covers then out[#out + 1] = "  names: " .. table.concat(d.covers, ", ") end
  if d.settings then
    out[#out + 1] = "  settings:"
    for _, s in ipairs(d.settings) do
      local head = s.name .. (s.required and " (required)" or s.default and (" = " .. s.default) or "")
      out[#out + 1] = string.format("    %-28s %s", head, s.doc or "")
    end
  end
  out[#out + 1] = "  example:"
  out[#out + 1] = indent(d.example, "    ")
  return table.concat(out, "\n"):gsub(" +\n", "\n") .. "\n"
end

-- `loom help`
function docs.index()
  local e = docs.entries()
  local out = { "The spec language (docs/SPEC.md; a guide for Fabric users: docs/GUIDE.md).",
                "loom help NAME describes one name, e.g. loom help Conv2d, loom help train, loom help fabric.", "" }
  for _, sec in ipairs(docs.SECTIONS) do
    local names = names_in(e, sec.key)
    if sec.key == "lua" then names = e.Lua.covers end
    out[#out + 1] = sec.title .. ":"
    local line = " "
    for _, n in ipairs(names) do
      if #line + #n + 1 > 100 then out[#out + 1] = line; line = " " end
      line = line .. " " .. n
    end
    out[#out + 1] = line
  end
  return table.concat(out, "\n") .. "\n"
end

local function md_escape(s) return (s:gsub("|", "\\|")) end

-- An entry's anchor: by section, as Flatten (module) and flatten (function) differ only in case.
local function anchor(d) return d.section .. "-" .. d.name:lower() end

-- docs/SPEC.md
function docs.markdown()
  local e = docs.entries()
  local out = { "# The spec language: reference", "",
    "Generated from the definitions (`gen/nn.lua`, `gen/tensor.lua`, `gen/spec.lua`) by `ninja docs`;",
    "do not edit (tests/suite_docs.sh fails when it is stale). `loom help NAME` prints the same entries.",
    "For the path from a Fabric script to a spec, read [GUIDE.md](GUIDE.md). Every example below is",
    "built by the test suite.", "" }
  for _, sec in ipairs(docs.SECTIONS) do
    local names = names_in(e, sec.key)
    local links = {}
    for i, n in ipairs(names) do links[i] = "[" .. n .. "](#" .. anchor(e[n]) .. ")" end
    out[#out + 1] = "- " .. sec.title .. ": " .. table.concat(links, ", ")
  end
  out[#out + 1] = ""
  for _, sec in ipairs(docs.SECTIONS) do
    out[#out + 1] = "## " .. sec.title
    out[#out + 1] = ""
    for _, n in ipairs(names_in(e, sec.key)) do
      local d = e[n]
      out[#out + 1] = string.format('<a id="%s"></a>', anchor(d))
      out[#out + 1] = ""
      out[#out + 1] = "### " .. n
      out[#out + 1] = ""
      if d.alias_of then
        out[#out + 1] = string.format("The same as [%s](#%s).", d.alias_of, anchor(e[d.alias_of]))
      else
        out[#out + 1] = d.summary:sub(1, 1):upper() .. d.summary:sub(2) .. "."
        out[#out + 1] = ""
        out[#out + 1] = "Counterpart: " .. d.torch .. "."
        if d.call then out[#out + 1] = ""; out[#out + 1] = "`" .. d.call .. "`" end
        if d.covers then out[#out + 1] = ""; out[#out + 1] = "Names: `" .. table.concat(d.covers, "`, `") .. "`." end
        if d.settings then
          out[#out + 1] = ""
          out[#out + 1] = "| setting | default | |"
          out[#out + 1] = "| --- | --- | --- |"
          for _, s in ipairs(d.settings) do
            out[#out + 1] = string.format("| `%s` | %s | %s |", s.name,
              s.required and "required" or s.default and ("`" .. md_escape(s.default) .. "`") or "—", md_escape(s.doc or ""))
          end
        end
        out[#out + 1] = ""
        out[#out + 1] = "```lua"
        out[#out + 1] = d.example
        out[#out + 1] = "```"
      end
      out[#out + 1] = ""
    end
  end
  return table.concat(out, "\n")
end

return docs
