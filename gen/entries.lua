-- entries: the model's declared methods beside forward (Fabric's mark_forward_method)
-- as the program's entry points.  Today a method is generated when it returns
-- autoregress(logits, idx, opts) (gen/ops.lua): sampling, one position at a time.  This
-- stage turns its trace into a decode step: the ops that compute the logits, each run
-- for one new position (their `rows` rule in gen/ops.lua says how, and where each
-- tensor's sequence dimension is), every tensor that depends on the tokens kept for
-- all positions of the window in the decode arena (the key/value cache: attention
-- reads the earlier positions' keys and values there; nothing earlier is recomputed).
-- A method that cannot be generated is refused, naming its spec line.
--
-- The method's trace goes through the precision plan as the training step's does
-- (gen/precision.lua: convert_input/convert_output, autocast's classes), so the decode
-- step computes in the compute type and rounds where forward stores in 16 bits: each
-- step's output row is rounded to its tensor's format, a narrowing cast is a step of
-- its own (a copy, rounded), and a parameter read through casts is read from a copy
-- converted once per sampling run (model_sample_begin).
local ops = require "ops"
local precision = require "precision"
local diag = require "diag"
local util = require "util"
local tensor = require "tensor"

local entries = {}

local function method_where(g, name)
  local fn = g.model_rec.methods[name]
  local info = type(fn) == "function" and debug.getinfo(fn, "S")
  if info and info.linedefined and info.linedefined > 0 then
    return { file = info.source:sub(2), line = info.linedefined }
  end
  return g.model_rec.where
end

-- a tensor that does not depend on the tokens, as a strided view of a parameter:
-- { param, shape, strides, fmt } (strides in elements; fmt: the format the view reads,
-- the parameter rounded through the casts on the way), or nil when it is computed.
-- `producer` maps a tensor to the node that makes it (the precision plan's trace, with
-- its casts); without it, the tensor's own node.
function entries.param_view(t, producer, fmt)
  if t.param then
    local strides, run = {}, 1
    for i = #t.shape, 1, -1 do strides[i] = run; run = run * t.shape[i] end
    return { param = t.param, shape = t.shape, strides = strides, fmt = fmt and fmt[t] }
  end
  local node = producer and producer[t] or t.node
  if not node or #node.inputs ~= 1 then return nil end
  local src = entries.param_view(node.inputs[1], producer, fmt)
  if not src then return nil end
  if node.op == "cast" then
    -- a narrowing cast rounds; a widening one keeps the values (and their rounding)
    local to = node.attrs.to
    if not src.fmt or precision.exact(src.fmt, to) then return src end
    if not precision.exact(to, src.fmt) then return nil end   -- bf16 through f16: two roundings, not one format
    return { param = src.param, shape = src.shape, strides = src.strides, fmt = to }
  elseif node.op == "transpose" or node.op == "permute" then
    local perm = ops[node.op].perm(node)
    local strides = {}
    for i, d in ipairs(perm) do strides[i] = src.strides[d + 1] end
    return { param = src.param, shape = t.shape, strides = strides, fmt = src.fmt }
  elseif (node.op == "reshape" or node.op == "flatten") then
    local run = 1
    for i = #src.shape, 1, -1 do
      if src.strides[i] ~= run then return nil end   -- only a contiguous one reshapes as a view
      run = run * src.shape[i]
    end
    local strides = {}
    run = 1
    for i = #t.shape, 1, -1 do strides[i] = run; run = run * t.shape[i] end
    return { param = src.param, shape = t.shape, strides = strides, fmt = src.fmt }
  end
  return nil
end

-- ops that only move values (their output holds its inputs' values)
local MOVES = { slice = true, transpose = true, permute = true, reshape = true, flatten = true, dropout = true,
                embedding = true }

-- The decode step of method `name` (its trace's result is an autoregress node), at
-- the program's precision: the trace with its casts (gen/precision.lua's assign).
local function decode_step(l, name, where, trace, out)
  local pp = precision.assign(trace, l.precision)
  local fmt, producer = pp.fmt, {}
  for _, n in ipairs(pp.trace.nodes) do producer[n.out] = n end
  local node = producer[out]
  local logits, idx = node.inputs[1], node.inputs[2]
  if not idx.input or #idx.shape ~= 2 or idx.shape[1] ~= "B" then
    diag.fatal(node.where, string.format("%s: autoregress's tokens must be a model input of shape (B, T), got %s",
      name, idx.input and util.shape_str(idx.shape) or "a computed tensor"))
  end
  local T, V = idx.shape[2], logits.shape[#logits.shape]
  -- the ops the logits depend on
  local needed, stack = {}, { logits }
  while #stack > 0 do
    local t = table.remove(stack)
    local p = producer[t]
    if p and not needed[p] then
      needed[p] = true
      for _, x in ipairs(p.inputs) do stack[#stack + 1] = x end
    end
  end
  local axis = { [idx] = 2 }
  local steps, views, alias, round, vocab_in = {}, {}, {}, {}, nil
  for _, n in ipairs(pp.trace.nodes) do
    if needed[n] then
      local axes, any = {}, false
      for i, x in ipairs(n.inputs) do
        if x.input and x ~= idx then
          diag.fatal(n.where, string.format("%s cannot be generated: the model's input '%s' is not the tokens autoregress samples (%s)",
            name, x.input, idx.input))
        end
        axes[i] = axis[x]
        any = any or axes[i] ~= nil
      end
      if any then
        local rule = ops[n.op].rows
        local a, why, same
        if rule then a, why, same = rule(n, axes) else why = "it has no rule for one position at a time" end
        if not a then
          diag.fatal(n.where, string.format("%s cannot be generated position by position (sampling with a key/value cache): %s: %s",
            name, n.module and n.module.call_text or n.op, why), { { where = where, msg = "the method " .. name } })
        end
        axis[n.out] = a
        -- a narrowing cast rounds: a step of its own (its input's row is read unrounded elsewhere)
        if n.op == "cast" and not precision.exact(fmt[n.inputs[1]], fmt[n.out]) then same = false end
        if same then alias[n.out] = n.inputs[1] else steps[#steps + 1] = n end
        -- forward stores this tensor in 16 bits: its row is rounded as forward's store rounds it
        -- (an op that only moves values already in that format changes nothing)
        local f = fmt[n.out]
        if not same and f and f ~= l.settings.compute and precision.exact(f, l.settings.compute) then
          local moved = MOVES[n.op]
          for i = 1, #n.inputs do
            local x = n.inputs[i]
            if x.dtype == "float" and not precision.exact(fmt[x] or l.settings.compute, f) then moved = false end
          end
          if not moved then round[n.out] = f end
        end
        if n.op == "embedding" and n.inputs[1] == idx then
          local w = n.inputs[2].shape[1]
          vocab_in = vocab_in and math.min(vocab_in, w) or w
        end
      else
        local v = entries.param_view(n.out, producer, fmt)
        if not v then
          diag.fatal(n.where, string.format("%s cannot be generated: %s computes from the parameters alone, which a decode step does not do yet",
            name, n.module and n.module.call_text or n.op))
        end
        views[n.out] = v
      end
    end
  end
  if axis[logits] ~= #logits.shape - 1 then
    diag.fatal(node.where, string.format("%s: the logits' sequence dimension is not the tokens' (dim %d of %s)",
      name, (axis[logits] or 0) - 1, util.shape_str(logits.shape)))
  end
  -- the decode arena: every tensor that depends on the tokens, T positions of it, each
  -- position's elements contiguous (position-major: the sequence dim taken out first)
  local bufs, size = {}, 0
  for _, n in ipairs(steps) do
    local rest = {}
    for i, d in ipairs(n.out.shape) do if i ~= axis[n.out] and d ~= "B" then rest[#rest + 1] = d end end
    local row = util.numel(rest, 1)
    bufs[n.out] = { offset = size, row = row, rest = rest }
    size = size + (T * row + 15) // 16 * 16
  end
  for _, n in ipairs(pp.trace.nodes) do   -- a view's rows are its source's
    if alias[n.out] then bufs[n.out] = bufs[alias[n.out]] end
  end
  return {
    name = name, where = where, temperature = node.attrs.temperature, top_k = node.attrs.top_k,
    context = T, vocab = V, vocab_in = vocab_in or V, idx = idx, logits = logits,
    steps = steps, alias = alias, axis = axis, views = views, bufs = bufs, size = size, scratch = T,
    round = round, fmt = fmt, producer = producer,
  }
end

-- What `loom inspect` and `loom explain` list of the traced graph `g`: one line per
-- declared method, forward first ({ name, where, what }).
function entries.describe(g)
  local rows = {}
  for _, name in ipairs(g.order) do
    local where, what = method_where(g, name), "the model's forward: the training step's and every method's"
    local out = g.traces[name].outputs[1]
    if g.called[name] then
      what = "called by the training step (part of its trace)"
    elseif name ~= "forward" then
      if tensor.is(out) and out.node and out.node.op == "autoregress" then
        local a = out.node.attrs
        what = string.format("sampling: autoregress over %s tokens, temperature %g, top_k %d (train --sample N; a decode step with a key/value cache)",
          util.shape_str(out.node.inputs[2].shape), a.temperature, a.top_k)
      else
        what = "not generated (only a method returning autoregress(...) is)"
      end
    end
    rows[#rows + 1] = { name = name, where = where, what = what }
  end
  return rows
end

-- The entry points of the lowered table `l`: { { name, where, ... } } in the methods'
-- order (gen/graph.lua), each with its decode step, or with `refused` (why this
-- program cannot run it: the precision, the backend), said once here as a note.
function entries.build(l)
  local g = l.graph
  local list = {}
  for _, name in ipairs(g.order) do
    -- a method the loss or the training step calls is part of that trace, not an entry
    if name ~= "forward" and not g.called[name] then
      local where = method_where(g, name)
      local trace = g.traces[name]
      local out = trace.outputs[1]
      if not (tensor.is(out) and out.node and out.node.op == "autoregress") or trace.outputs.n ~= 1 then
        diag.error(where, string.format("method '%s' cannot be generated: an entry point beside forward returns "
          .. "autoregress(logits, idx, opts) (sampling); forward is the model's one other method", name))
      else
        -- (the exported library, backend "export", runs the C backend's decode step; the
        -- CUDA program its own, gen/emit_cuda.lua)
        local e = decode_step(l, name, where, trace, out)
        -- the CUDA library (an exported one) has no decode step yet
        if l.backend == "cuda" and l.inference then
          e.refused = "the CUDA library does not sample yet (export it for the CPU: --accelerator=cpu)"
        end
        if e.refused then
          io.stderr:write(string.format("%s:%d: note: %s is not generated: %s; %s\n", where.file, where.line, name, e.refused,
            l.inference and "the library has no " .. name .. " function" or "the program refuses --sample"))
        end
        list[#list + 1] = e
      end
    end
  end
  diag.check()
  if #list > 1 then
    diag.fatal(list[2].where, string.format("one sampling method per model: %s and %s both return autoregress(...)",
      list[1].name, list[2].name))
  end
  return list
end

return entries
