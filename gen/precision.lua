-- precision: Fabric's precision string, resolved once.  Gives every float tensor
-- of a trace a format (f64, f32, bf16, f16), inserts the casts that Fabric and
-- autocast would make at run time, and then folds them:
--   a cast of a cast          composes (rounding through both, never dropped when it narrows)
--   a cast after a producer   the producer stores in the new format (narrowing casts)
--   a cast before consumers   each consumer loads with the conversion (widening casts,
--                             and narrowing ones read at most FOLD_READS times a step)
-- and keeps as a kernel only a narrowing cast read more often than that, where one
-- conversion into its own buffer moves fewer bytes than converting at every read.
--
-- The rules, per precision (Fabric 2.x, PyTorch's autocast lists):
--   32-true, 64-true      every tensor in that format; no casts
--   bf16-true, 16-true    parameters, buffers, activations and gradients in 16 bits;
--                         convert_input casts the model's float inputs to 16 bits,
--                         convert_output casts its outputs to float32 (the loss runs there)
--   bf16-mixed, 16-mixed  parameters and optimizer state fp32; convert_input /
--                         convert_output as above; inside the model each op's class
--                         (gen/ops.lua) decides: "lowp" casts its float inputs to 16
--                         bits, "fp32" to fp32, "follow" promotes them to the widest
--                         format among them (bf16 with f16 gives fp32, as torch does)
-- Compute is float32 except in 64-true; a 16-bit value widens to float exactly, so
-- an op over widened operands is the 16-bit op with float accumulation.
--
-- Casts are nodes (op "cast") in a copy of the trace, so autodiff derives their
-- backward (the gradient cast back).  A folded cast stays in the trace as a view:
-- `pp.link[y] = { src = x }` says y's storage is x's and y is read as y's format;
-- `pp.link[x] = { src = y }` (producer fold) says x is stored in y's buffer.
local ops = require "ops"
local util = require "util"

local precision = {}

precision.FORMATS = {
  f64 = { ctype = "double", bytes = 8 },
  f32 = { ctype = "float", bytes = 4 },
  bf16 = { ctype = "k_bf16", bytes = 2 },
  f16 = { ctype = "k_f16", bytes = 2 },
  i64 = { ctype = "int64_t", bytes = 8 },   -- integer activations (argmax, comparisons), never cast
}
precision.TORCH_DTYPE = { f64 = "float64", f32 = "float32", bf16 = "bfloat16", f16 = "float16", i64 = "int64" }

-- compute: the kernels' type; state: parameters, grads, buffers, optimizer state;
-- optimizer: the optimizer state's format where it is not the state's (16-true: float16
-- cannot hold Adam's second moment, 0.001·g² < 6e-8 for |g| < 7.7e-3, so the moments stay
-- float32; PyTorch's own 16-true Adam goes NaN within a few steps);
-- half: the 16-bit format; mixed: autocast's op classes apply.
local SETTINGS = {
  ["64-true"] = { compute = "f64", state = "f64" },
  ["32-true"] = { compute = "f32", state = "f32" },
  ["bf16-true"] = { compute = "f32", state = "bf16", half = "bf16" },
  ["16-true"] = { compute = "f32", state = "f16", optimizer = "f32", half = "f16" },
  ["bf16-mixed"] = { compute = "f32", state = "f32", half = "bf16", mixed = true },
  ["16-mixed"] = { compute = "f32", state = "f32", half = "f16", mixed = true, loss_scaling = true },
}
precision.SETTINGS = SETTINGS

-- the optimizer state's format under `settings` (one of SETTINGS)
function precision.optimizer_format(settings) return settings.optimizer or settings.state end

-- A narrowing cast read at most this many times a step is folded into its readers:
-- converting at each read moves 4k bytes an element (fp32 reads), one conversion
-- into a 16-bit buffer 4 + 2 + 2k; the fold costs less up to k = 3.
local FOLD_READS = 3

-- Can every value of format a be held exactly in format b?
local SUBSET = {
  f16 = { f16 = true, f32 = true, f64 = true }, bf16 = { bf16 = true, f32 = true, f64 = true },
  f32 = { f32 = true, f64 = true }, f64 = { f64 = true },
}
function precision.exact(a, b) return SUBSET[a][b] == true end

local function promote(a, b)
  if a == nil then return b end
  if b == nil or a == b then return a end
  if precision.exact(a, b) then return b end
  if precision.exact(b, a) then return a end
  return "f32"   -- bf16 with f16
end

local function arity(node)
  return ops[node.op].arity or #node.inputs
end

-- Copies `trace` with casts inserted; returns the plan (pp) with pp.trace.
-- `events` (a training_step's, gen/user_step.lua: each at a count of traced ops) scope
-- the casts: a value cast before an event is cast again after it, as each of Fabric's
-- module calls casts under its own autocast region.  A parameter's 16-bit copy made
-- before an optimizer's step would be stale after it, and a backward would otherwise
-- reach the cast a later one goes through again.
function precision.assign(trace, name, events)
  local S = assert(SETTINGS[name], name)
  local pp = { name = name, settings = S, fmt = {}, casts = {}, link = {}, cast_of = {}, uses = {} }
  local fmt = pp.fmt
  local next_id = trace.ntensors
  local nodes = {}
  local made = {}                 -- made[x][format] = the cast tensor (one cast per value and format)
  local produced_inside = {}      -- tensors computed inside the model's forward

  local function cast(x, to, rule, consumer)
    if fmt[x] == to then return x end
    made[x] = made[x] or {}
    local y = made[x][to]
    if y then
      pp.uses[y] = pp.uses[y] + 1
      return y
    end
    next_id = next_id + 1
    local node = { op = "cast", inputs = { x }, attrs = { from = fmt[x], to = to },
                   module = consumer.module, where = consumer.where, call_where = consumer.call_where }
    y = setmetatable({ shape = x.shape, dtype = "float", id = next_id, node = node }, getmetatable(x))
    node.out = y
    fmt[y] = to
    made[x][to] = y
    nodes[#nodes + 1] = node
    pp.casts[#pp.casts + 1] = { node = node, from = fmt[x], to = to, rule = rule, consumer = consumer }
    pp.cast_of[y] = x
    pp.uses[y] = 1
    produced_inside[y] = produced_inside[x]
    return y
  end

  for _, p in ipairs(trace.param_tensors or {}) do fmt[p] = S.state end
  local next_event = 1
  for i, node in ipairs(trace.nodes) do
    local crossed = false
    while events and events[next_event] and events[next_event].at < i do next_event, crossed = next_event + 1, true end
    if crossed then made = {} end
    local op = ops[node.op]
    local copy = {}
    for k, v in pairs(node) do copy[k] = v end
    copy.inputs = {}
    copy.original = node
    local inside = node.module ~= nil
    local n = arity(node)
    for i = 1, n do
      local x = node.inputs[i]
      if x and x.dtype == "float" then
        if fmt[x] == nil then
          fmt[x] = x.param and S.state or S.compute   -- data arrives in the program's compute type
        end
        if S.half then
          if x.input and inside then x = cast(x, S.half, "convert_input: the model's float inputs", node)
          elseif events and not S.mixed and inside and not x.param and not produced_inside[x] then
            -- a training_step's call of the model (or a submodule) at bf16-true/16-true is
            -- Fabric's module call: HalfPrecision.convert_input takes a float tensor made
            -- outside (a model's output after convert_output, a sum in the step) to the
            -- half type (under *-mixed autocast casts at the ops that need it)
            x = cast(x, S.half, "convert_input: a float tensor entering a call of the model", node)
          end
          if produced_inside[x] and not inside and not x.param then
            x = cast(x, "f32", "convert_output: the model's outputs, in the default dtype", node)
          end
        end
      end
      copy.inputs[i] = x
    end
    -- autocast's classes (mixed precisions only)
    local out_fmt
    if S.mixed and inside then
      if op.precision == "lowp" then
        for i = 1, n do
          local x = copy.inputs[i]
          if x and x.dtype == "float" then copy.inputs[i] = cast(x, S.half, "autocast: " .. node.op .. " runs in " .. S.half, node) end
        end
        out_fmt = S.half
      elseif op.precision == "fp32" then
        for i = 1, n do
          local x = copy.inputs[i]
          if x and x.dtype == "float" then copy.inputs[i] = cast(x, "f32", "autocast: " .. node.op .. " runs in float32", node) end
        end
        out_fmt = "f32"
      end
    end
    if not out_fmt then
      -- follow: the widest of the inputs the op computes with
      local widest
      for i = 1, n do
        local x = copy.inputs[i]
        if x and x.dtype == "float" and not (op.keeps_dtype and op.keeps_dtype[i]) then widest = promote(widest, fmt[x]) end
      end
      if not widest then
        for i = 1, n do
          local x = copy.inputs[i]
          if x and x.dtype == "float" then widest = promote(widest, fmt[x]) end
        end
      end
      for i = 1, n do
        local x = copy.inputs[i]
        if x and x.dtype == "float" and not (op.keeps_dtype and op.keeps_dtype[i]) and fmt[x] ~= widest then
          copy.inputs[i] = cast(x, widest, "type promotion: " .. node.op .. " of " .. fmt[x] .. " with " .. widest, node)
        end
      end
      out_fmt = widest or S.compute
    end
    if node.out.dtype == "float" then
      fmt[node.out] = out_fmt
      if inside then produced_inside[node.out] = true end
    elseif not ops[node.op].alias then
      fmt[node.out] = "i64"   -- an integer result (argmax, a comparison): int64 at every precision
    end
    nodes[#nodes + 1] = copy
  end
  local t = {}
  for k, v in pairs(trace) do t[k] = v end
  t.nodes = nodes
  for i, node in ipairs(nodes) do node.index = i end
  t.ntensors = next_id
  pp.trace = t
  return pp
end

-- Folds casts after autodiff (it needs to know who reads what in the backward).
-- `is_alias(node)` says an op is a view of its input (reshape, flatten).
function precision.fold(pp, ad, is_alias)
  local trace = pp.trace
  local consumers = {}     -- consumers[t] = { node, ... } in the forward
  for _, node in ipairs(trace.nodes) do
    for i = 1, arity(node) do
      local x = node.inputs[i]
      if x then
        consumers[x] = consumers[x] or {}
        consumers[x][#consumers[x] + 1] = node
      end
    end
  end
  local in_backward = {}
  for _, node in ipairs(ad.backward) do in_backward[node] = true end
  for _, seg in ipairs(ad.segments or {}) do   -- a training_step's every backward
    for _, node in ipairs(seg.nodes or {}) do in_backward[node] = true end
  end
  local outputs = {}
  for i = 1, (trace.outputs and trace.outputs.n or 0) do outputs[trace.outputs[i]] = true end

  -- kernel reads of t a step: each consumer's forward, and its backward when it runs;
  -- through views, the readers of the view
  local function reads(t)
    local k = 0
    for _, c in ipairs(consumers[t] or {}) do
      if is_alias(c) or (c.op == "cast" and pp.folded and pp.folded[c]) then k = k + reads(c.out)
      else k = k + 1 + (in_backward[c] and 1 or 0) end
    end
    return k
  end

  pp.folded = {}
  for _, c in ipairs(pp.casts) do
    local node = c.node
    local x, y = node.inputs[1], node.out
    local P = x.node
    local narrowing = not precision.exact(c.from, c.to)
    local only_reader = consumers[x] and #consumers[x] == 1 and not outputs[x]
    if narrowing and P and not x.param and not x.input and not is_alias(P) and P.op ~= "cast" and only_reader
        and not ops[P.op].backward_reads_output then
      pp.link[x] = { src = y }
      pp.folded[node] = true
      c.fate = "folded into the store of its producer"
      c.into = P
    elseif not narrowing or reads(y) <= FOLD_READS then
      pp.link[y] = { src = x }
      pp.folded[node] = true
      c.fate = (P and P.op == "cast" and "composed with the cast before it, " or "") ..
        "folded into the load of its reader" .. ((consumers[y] and #consumers[y] > 1) and "s" or "")
      c.into = consumers[y] and consumers[y][1]
      c.reads = reads(y)
    else
      c.fate = string.format("kept: read %d times a step, more than the %d a fold pays for", reads(y), FOLD_READS)
      c.reads = reads(y)
    end
  end
  return pp
end

-- The formats a value goes through from its root's storage to tensor t, with the
-- steps that change nothing removed: { storage } or { storage, view }.  `next_of(t)`
-- is the backend's link toward the storage (a view's input, a folded cast's other
-- end); tensors without a format (a backend's own temporaries) count as `default`.
function precision.chain(pp, t, next_of, default)
  local steps = {}
  local u = t
  while u do
    if u.dtype == "float" then table.insert(steps, 1, pp.fmt[u] or default) end
    u = next_of(u)
  end
  local out = { steps[1] }
  for i = 2, #steps do
    if not precision.exact(out[#out], steps[i]) then out[#out + 1] = steps[i] end
  end
  assert(#out <= 2, "a value rounded through more than one format")
  return out
end

local function label(t)
  if t.param then return t.param end
  if t.input then return "input " .. t.input end
  local n = t.node
  if n.op == "cast" then return label(n.inputs[1]) .. " as " .. n.attrs.to end
  return string.format("%s@%s:%d", n.op, n.where and n.where.file:match("[^/]*$") or "?", n.where and n.where.line or 0)
end
precision.label = label

-- The plan as tab-separated lines (precision_plan.tsv beside the generated program;
-- the tests read it).  `operands`: the emitter's lists of kernel operands, of which
-- those not in the compute type are the program's conversions; `root(t)` its storage
-- resolution.
--   tensor      ID  LABEL  SHAPE  FORMAT  STORED        (STORED: its own buffer, or "in tN")
--   cast        FROM  TO  FATE  RULE  AT
--   conversion  PHASE  OP  VALUE|GRAD|BUFFER  STORAGE  VIEW  HOW  ELEMENTS
--   native      PHASE  OP  VALUE|GRAD  STORAGE  HOW  ELEMENTS   (a 16-bit operand the kernel
--               reads or writes in its storage itself: gen/kernels_c.lua's e.native)
function precision.plan_tsv(pp, operands, root)
  local S = pp.settings
  local lines = { string.format("# precision %s: compute %s, state %s, half %s", pp.name, S.compute, S.state, S.half or "-") }
  local seen = {}
  local function tensor_line(t)
    if seen[t] or t.dtype ~= "float" then return end
    seen[t] = true
    local r = root(t)
    lines[#lines + 1] = table.concat({ "tensor", "t" .. t.id, label(t), util.shape_str(t.shape), pp.fmt[t],
      r == t and "own" or ("in t" .. r.id) }, "\t")
  end
  for _, node in ipairs(pp.trace.nodes) do
    for i = 1, arity(node) do if node.inputs[i] then tensor_line(node.inputs[i]) end end
    tensor_line(node.out)
  end
  for _, c in ipairs(pp.casts) do
    lines[#lines + 1] = table.concat({ "cast", c.from, c.to, c.fate or "-", c.rule,
      string.format("%s:%d", c.node.where.file, c.node.where.line) }, "\t")
  end
  local compute = S.compute
  for _, list in ipairs(operands) do
    for _, cv in ipairs(list) do
      if cv.native then   -- read or written in its 16-bit storage by the kernel itself: no conversion
        lines[#lines + 1] = table.concat({ "native", cv.phase, cv.node and cv.node.op or "-", cv.what, cv.storage,
          cv.how, tostring(cv.count) }, "\t")
      elseif not (cv.storage == compute and cv.view == compute) then
        lines[#lines + 1] = table.concat({ "conversion", cv.phase, cv.node and cv.node.op or "-", cv.what, cv.storage,
          cv.view, cv.how, tostring(cv.count) }, "\t")
      end
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

-- One line per setting for model.h.
function precision.summary(pp)
  local S = pp.settings
  if not S.half then return "every tensor is " .. precision.FORMATS[S.compute].ctype end
  return string.format("compute in float; parameters and optimizer state %s; activations in %s where the plan says (REPORT.md)%s",
    S.state, S.half, S.loss_scaling and "; dynamic loss scaling" or "")
end

return precision
