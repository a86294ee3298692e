-- build/lua_unit tests/docs/check.lua OUTDIR: the reference against the spec environment,
-- and util.did_you_mean's threshold.
-- Prints one TAP line per check (no plan: tests/suite_docs.sh counts them) and writes
-- each entry's example, as a whole spec, to OUTDIR/<name>.lua for the suite to build.
local spec = require "spec"
local docs = require "docs"
local outdir = arg[1]

local entries = docs.entries()
local names, lua_names = spec.environment()

-- every name a spec can use is documented (a new DSL name needs its doc: nn.doc,
-- tensor.doc or spec.doc, next to its definition)
local in_env = {}
for _, n in ipairs(names) do in_env[n] = true end
for _, n in ipairs(lua_names) do in_env[n] = true end
for _, n in ipairs(names) do
  if docs.find(n, entries) then print("ok env/" .. n .. " is documented")
  else print("not ok env/" .. n .. ": a name of the spec environment without a reference entry "
    .. "(add its doc beside its definition: nn.doc, tensor.doc or spec.doc)") end
end
for _, n in ipairs(lua_names) do
  if docs.find(n, entries) then print("ok env/" .. n .. " is documented")
  else print("not ok env/" .. n .. ": not covered by the Lua entry") end
end

-- and nothing is documented that a spec cannot use
for name, d in pairs(entries) do
  local reachable = in_env[name] or d.section == "lua"
  local complete = d.alias_of and entries[d.alias_of] ~= nil
    or (type(d.summary) == "string" and type(d.torch) == "string" and type(d.example) == "string")
  if not reachable then print("not ok entry/" .. name .. ": documented but not in the spec environment")
  elseif not complete then print("not ok entry/" .. name .. ": needs a summary, a counterpart and an example")
  else print("ok entry/" .. name .. " is complete") end
  if d.settings then
    local missing = {}
    for _, s in ipairs(d.settings) do
      if d.section == "block" and not s.doc then missing[#missing + 1] = s.name end
    end
    if #missing > 0 then print("not ok settings/" .. name .. ": settings without a doc: " .. table.concat(missing, ", "))
    else print("ok settings/" .. name .. " are described") end
  end
  local text, beside = docs.example_spec(d)
  if text then
    local f = assert(io.open(outdir .. "/" .. name .. ".lua", "w"))
    f:write("-- the example of `loom help " .. name .. "`\n", text)
    f:close()
    for file, content in pairs(beside or {}) do
      f = assert(io.open(outdir .. "/" .. file, "w"))
      f:write(content)
      f:close()
    end
  end
end

-- did-you-mean suggests likely typos only: transpositions count as one edit, and short
-- words get a budget of one (the issue's LSTM → 'sum' and nn → 'l1' were absurd)
local util = require "util"
for _, c in ipairs {
  { "LSTM", { "sum", "l1", "Linear" }, "" },
  { "nn", { "l1", "mse" }, "" },
  { "Conv1d", { "Conv2d" }, " (did you mean 'Conv2d'?)" },   -- close in spelling; spec.unknown_name answers it first
  { "wieght_decay", { "weight_decay", "lr" }, " (did you mean 'weight_decay'?)" },
  { "cdua", { "cpu", "cuda" }, " (did you mean 'cuda'?)" },
  { "img", { "image", "label" }, " (did you mean 'image'?)" },
  { "epoch", { "epochs", "seed" }, " (did you mean 'epochs'?)" },
  { "Blorp", { "BatchNorm1d", "Flatten", "Dropout" }, "" },
} do
  local got = util.did_you_mean(c[1], c[2])
  if got == c[3] then print("ok did_you_mean/" .. c[1])
  else print(string.format("not ok did_you_mean/%s: got '%s', expected '%s'", c[1], got, c[3])) end
end
