-- Unit tests of a spec's own training step (gen/user_step.lua) through its module API:
-- the events the trace records, the segments the autodiff stage makes of them, and what
-- detach and no_grad cut.  Run by tests/suite_passes.sh:
--   build/lua_unit tests/passes/test_user_step.lua
local spec = require "spec"
local graph = require "graph"
local diag = require "diag"
local precision = require "precision"
local user_step = require "user_step"
local unit = dofile((arg[0]:gsub("[^/]*$", "")) .. "lib/unit.lua")
local test, eq = unit.test, unit.eq


-- A two-submodule model (a, b: Linear(4, 4) each) trained by `step` (the body of
-- training_step(fabric, m, b) with opt_a over a and opt_b over b): the graph and its
-- segments after precision (32-true) and the user step's autodiff.
local function lower(step, prec)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write('model "T" {\n  inputs = { x = Tensor{4} },\n  a = Linear(4, 4),\n  b = Linear(4, 4),\n',
    "  forward = function(m, b) return m.b(m.a(b.x)) end,\n}\n",
    "train {\n  data = Synthetic { fields = { x = Tensor{4} }, size = 16 },\n  batch_size = 4, max_steps = 1,\n",
    "  optimizers = { opt_a = { SGD { lr = 0.1 }, params = \"a\" }, opt_b = { SGD { lr = 0.1 }, params = \"b\" } },\n",
    "  training_step = function(fabric, m, b)\n    local oa, ob = fabric.optimizers.opt_a, fabric.optimizers.opt_b\n",
    step, "\n  end,\n}\n")
  f:close()
  diag.reset()
  local ok, g = pcall(function() return graph.build(spec.load(path)) end)
  os.remove(path)
  if not ok then error(diag.is_failure(g) and g.text or g, 0) end
  local pp = precision.assign(g.loss, prec or "32-true", prec and g.step.events)
  return g, user_step.differentiate(pp.trace, g.step), pp
end

local function kinds(ad)
  local k = {}
  for _, s in ipairs(ad.segments) do k[#k + 1] = s.kind end
  return table.concat(k, " ")
end
local function params_of(s)
  local names = {}
  for name in pairs(s.params) do names[#names + 1] = name end
  table.sort(names)
  return table.concat(names, ",")
end

test("segments_follow_the_spec_order", function()
  local _, ad = lower([[
    oa:zero_grad(); ob:zero_grad()
    local h = m.a(b.x)
    local l1 = mean(m.b(h))
    fabric.backward(l1)
    oa:step(); ob:step()
    return l1]])
  eq(kinds(ad), "zero_grad zero_grad forward backward step step", "segments")
  eq(params_of(ad.segments[4]), "a.bias,a.weight,b.bias,b.weight", "the backward's parameters")
end)

test("detach_cuts_the_gradient_to_the_first_module", function()
  local _, ad = lower([[
    oa:zero_grad(); ob:zero_grad()
    local h = m.a(b.x)
    local lb = mean(m.b(h:detach()))
    fabric.backward(lb)
    ob:step()
    local la = mean(m.a(b.x))
    fabric.backward(la)
    oa:step()
    return la]])
  eq(kinds(ad), "zero_grad zero_grad forward backward step forward backward step", "segments")
  eq(params_of(ad.segments[4]), "b.bias,b.weight", "the first backward reaches b only")
  eq(params_of(ad.segments[7]), "a.bias,a.weight", "the second reaches a")
end)

test("no_grad_ops_need_no_gradient", function()
  local g, ad = lower([[
    oa:zero_grad(); ob:zero_grad()
    local t = no_grad(function() return m.a(b.x) * 2 end)
    local l = mean(m.b(b.x) - t)
    fabric.backward(l)
    ob:step()
    return l]])
  local under, needing = 0, 0
  for _, node in ipairs(g.loss.nodes) do
    if node.no_grad then
      under = under + 1
      if ad.needs_grad[node.out] then needing = needing + 1 end
    end
  end
  eq(under, 2, "ops recorded under no_grad (a's linear, the product)")
  eq(needing, 0, "of them needing a gradient")
  eq(params_of(ad.segments[4]), "b.bias,b.weight", "the backward reaches b only")
end)

test("each_step_counts_its_own_updates", function()
  local _, ad = lower([[
    oa:zero_grad()
    local l = mean(m.a(b.x))
    fabric.backward(l)
    oa:step()
    oa:zero_grad()
    local l2 = mean(m.a(b.x))
    fabric.backward(l2)
    oa:step()
    return l2]])
  local steps = 0
  for _, s in ipairs(ad.segments) do if s.kind == "step" then steps = steps + 1; eq(s.opt.name, "opt_a", "the optimizer") end end
  eq(steps, 2, "opt_a's steps in one training step")
end)

-- bf16-true (Fabric's HalfPrecision): each call of the model takes the float tensors it
-- is given to bfloat16 (convert_input), the batch's and one the step computed alike, and
-- gives its outputs back in float32 (convert_output) for what the step computes
test("bf16_true_converts_each_model_calls_inputs", function()
  local _, _, pp = lower([[
    oa:zero_grad(); ob:zero_grad()
    local h = m.a(b.x) * 2
    local l = mean(m.b(h:detach()))
    fabric.backward(l)
    ob:step()
    return l]], "bf16-true")
  local rules = {}
  for _, c in ipairs(pp.casts) do rules[#rules + 1] = string.format("%s>%s %s", c.from, c.to, c.rule:match("^[^:]*")) end
  eq(table.concat(rules, ", "), "f32>bf16 convert_input, bf16>f32 convert_output, f32>bf16 convert_input, bf16>f32 convert_output",
    "b.x into m.a, m.a's output into the step's mul, the step's h into m.b, m.b's output into mean")
  local mul
  for _, node in ipairs(pp.trace.nodes) do if node.op == "mul" then mul = node end end
  eq(pp.fmt[mul.out], "f32", "the step's own op computes in float32")
end)

unit.run()
