-- report: the REPORT.md that `loom explain` writes (and its HTML rendering by
-- libcmark).  Later stages add their own sections through `sections`.
local util = require "util"
local nn = require "nn"
local graph = require "graph"
local inspect = require "inspect"
local loomc = require "loomc"

local report = {}

local function md_escape(s) return (s:gsub("([|*_`\\<>])", "\\%1")) end

local function op_label(g, node)
  if node.module then
    local prefix = (g.prefix_of[node.module] or ""):gsub("%.$", "")
    if prefix == "" then prefix = "(model)" end
    return string.format("`%s` %s", prefix, node.module.class)
  end
  return ""
end

function report.markdown(g, sections)
  local sp = g.spec
  local out = {}
  local function add(s) out[#out + 1] = s end
  add(string.format("# %s — loom report", g.model_rec.class))
  add("")
  add(string.format("Spec: `%s`.  Precision `%s`, accelerator `%s`, strategy `%s`, devices `%s`.",
    sp.file, sp.fabric.precision, sp.fabric.accelerator, sp.fabric.strategy, tostring(sp.fabric.devices)))
  add("")
  add("## Model")
  add("")
  add("As PyTorch prints the equivalent module:")
  add("")
  add("```")
  add(nn.repr(g.model))
  add("```")
  add("")
  add("## Inputs")
  add("")
  add("| name | shape (per batch) | dtype |")
  add("| --- | --- | --- |")
  for _, inp in ipairs(sp.inputs) do
    local s = { "B" }
    for _, d in ipairs(inp.decl.shape) do s[#s + 1] = d end
    add(string.format("| %s | %s | %s |", md_escape(inp.name), util.shape_str(s), inp.decl.dtype == "int64" and "int64" or "float32"))
  end
  add("")
  add("## Parameters")
  add("")
  add("| name | shape | count | init |")
  add("| --- | --- | ---: | --- |")
  for _, p in ipairs(g.params) do
    add(string.format("| `%s` | %s | %s | %s |", p.name, inspect.shape_text(p.shape), util.commas(util.numel(p.shape)), p.init.kind))
  end
  if #g.buffers > 0 then
    add("")
    add("Buffers:")
    add("")
    add("| name | shape | dtype |")
    add("| --- | --- | --- |")
    for _, b in ipairs(g.buffers) do
      add(string.format("| `%s` | %s | %s |", b.name, inspect.shape_text(b.shape), b.dtype == "int64" and "int64" or "float32"))
    end
  end
  local np, nb = inspect.totals(g)
  add("")
  add(string.format("**%s parameters** (%s in fp32), %s buffer values.", util.commas(np), util.human_bytes(4 * np), util.commas(nb)))
  local traces = {}
  for _, name in ipairs(g.order) do traces[#traces + 1] = { name = name, t = g.traces[name] } end
  if g.loss then traces[#traces + 1] = { name = "loss (training step)", t = g.loss } end
  for _, e in ipairs(traces) do
    local flops, act = graph.totals(e.t)
    add("")
    add(string.format("## Traced ops: `%s`", e.name))
    add("")
    add("| # | op | module | output shape | FLOPs / sample | spec line |")
    add("| ---: | --- | --- | --- | ---: | --- |")
    for i, node in ipairs(e.t.nodes) do
      add(string.format("| %d | %s | %s | %s | %s | %s:%d |", i, node.op, op_label(g, node),
        util.shape_str(node.out.shape), util.commas(node.flops), node.where.file, node.where.line))
    end
    add("")
    add(string.format("Forward: **%s FLOPs per sample** (%sFLOP); a training step costs about 3× that. " ..
      "Activation memory: **%s per sample** (every op output, fp32).",
      util.commas(flops), util.human_flops(flops), util.human_bytes(act)))
  end
  for _, s in ipairs(sections or {}) do
    add("")
    add(s)
  end
  return table.concat(out, "\n") .. "\n"
end

-- The C backend's memory plan for the training step (gen/plan.lua), at the spec's
-- batch size: what the generated program allocates, buffer by buffer.
function report.memory_section(g)
  if not (g.loss and g.spec.train) then return nil end
  local plan = require "plan"
  local ops_cpu = require "ops_cpu"
  for _, node in ipairs(g.loss.nodes) do
    if not ops_cpu[node.op] then return nil end   -- not on the C backend (yet)
  end
  local ad = require("autodiff").differentiate(g.loss)
  local st = plan.state(g)
  local B = g.spec.train.batch_size
  local p = plan.activations(g.loss, ad, B)
  local esize = g.spec.fabric.precision == "64-true" and 8 or 4
  local opt = g.spec.train.optimizer
  local nstate = opt.kind == "SGD" and (opt.args.momentum ~= 0 and 1 or 0) or (opt.args.amsgrad and 3 or 2)
  local rows = {
    { "parameters", st.nparams * esize },
    { "gradients", st.nparams * esize },
    { string.format("optimizer state (%s: %d per parameter)", opt.kind, nstate), nstate * st.nparams * esize },
    { "buffers (running statistics, counters)", st.nbuffers * esize + 8 * #st.counters },
    { string.format("activations and what backward keeps (B = %d)", B), p.nacts * esize },
    { "activation gradients", p.ngrads * esize },
    { "max-pool argmax (int32)", p.nint * 4 },
  }
  local out = { "## Memory plan (C backend)", "",
    string.format("What the generated program allocates for a training step at batch %d (%s; scratch for im2col comes on top and depends on the thread count).", B,
      esize == 8 and "float64" or "float32"), "",
    "| buffer | bytes |", "| --- | ---: |" }
  local total = 0
  for _, r in ipairs(rows) do
    out[#out + 1] = string.format("| %s | %s |", r[1], util.human_bytes(r[2]))
    total = total + r[2]
  end
  out[#out + 1] = string.format("| **total** | **%s** |", util.human_bytes(total))
  return table.concat(out, "\n")
end

local HTML_HEAD = [[<!doctype html>
<html><head><meta charset="utf-8"><title>%s</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 8px; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; } code { font-size: 90%%; }
</style></head><body>
]]

function report.html(title, markdown)
  return string.format(HTML_HEAD, title) .. loomc.markdown_to_html(markdown) .. "</body></html>\n"
end

return report
