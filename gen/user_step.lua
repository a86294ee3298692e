-- user_step: a spec's own training step (train { training_step = function(fabric, m, b)
-- ... end, optimizers = { ... } }), Fabric's loop written out: several backward calls,
-- several optimizers each over some of the model's submodules, detach and no_grad.
--
-- The graph stage traces the function once into one trace (every op in the order it
-- ran) and a list of events between its ops: backward(loss), step(optimizer),
-- zero_grad(optimizer), each at the count of ops before it (`at`).  The autodiff stage
-- (`differentiate`) gives each backward its own nodes (what its loss reaches, through
-- what was recorded before it) and checks PyTorch's ordering rules; the C backend
-- (`model_c`, `optim_c`) emits the forward between events, each backward, each
-- optimizer's step over its own parameters and each zero_grad, as straight-line calls
-- in model_user_step, which the training loop runs once per batch.  Under ddp (CPU) each
-- rank runs the whole step on its shard, and before each optimizer's step the gradients
-- of its parameters the step's backwards changed since they were last averaged are
-- averaged over the ranks (gen/strategy.lua's `averaged`; runtime/ddp.h's ddp_average_grads).
--
-- PyTorch's semantics kept: gradients of parameters add up over backward calls until a
-- zero_grad; an optimizer steps only its parameters; the forward after a step reads the
-- updated weights; a detached tensor (or one made under no_grad) passes no gradient.
-- What PyTorch refuses is refused (a backward through ops it already went through, or
-- through weights an optimizer changed since they were read), and so is what would make
-- the generated step differ from PyTorch's from one step to the next (gradients carried
-- over from the previous step, an optimizer stepping a parameter no backward reached).
local diag = require "diag"
local util = require "util"
local tensor = require "tensor"
local ops = require "ops"

local user_step = {}

---------------------------------------------------------------------------
-- Front end (the graph stage)

-- The optimizers' parameters: each optimizer's names of submodules → the model's
-- parameters under them (in layout order).  A parameter in two optimizers, a name
-- with no parameter, or optimizers of different kinds or state layouts are refused.
local function resolve_optimizers(g, list)
  local owner = {}
  local out, by_name = {}, {}
  local rule0
  for _, o in ipairs(list) do
    local params, set = {}, {}
    for _, sub in ipairs(o.params) do
      local hits = 0
      for _, p in ipairs(g.params) do
        if p.name == sub or p.name:sub(1, #sub + 1) == sub .. "." then
          hits = hits + 1
          if owner[p.name] and owner[p.name] ~= o.name then
            diag.fatal(o.opt.where, string.format("optimizers '%s' and '%s' both update %s: give each parameter to one optimizer",
              owner[p.name], o.name, p.name))
          end
          owner[p.name] = o.name
          if not set[p.name] then set[p.name] = true; params[#params + 1] = p.name end
        end
      end
      if hits == 0 then
        diag.fatal(o.opt.where, string.format("optimizer '%s': params names '%s', which is no submodule of the model with parameters",
          o.name, tostring(sub)))
      end
    end
    local a = o.opt.args
    -- the optimizers share one Optimizer struct (state arrays laid out like the parameters,
    -- each optimizer's slice its own): their kinds and state layouts must agree
    local rule = require("optimizers").rule(o.opt.kind)
    local layout = table.concat(rule.states(a), ",")
    local init = {}
    for k, v in pairs(rule.init and rule.init(a) or {}) do init[#init + 1] = k .. "=" .. tostring(v) end
    table.sort(init)
    layout = layout .. "|" .. table.concat(init, ",")
    if rule.fields then
      diag.fatal(o.opt.where, string.format("optimizer '%s': %s in a training_step is not supported yet (it keeps state beside the parameters')",
        o.name, o.opt.kind))
    end
    if rule0 and (rule0.kind ~= o.opt.kind or rule0.layout ~= layout) then
      diag.fatal(o.opt.where, string.format("optimizer '%s' is %s with state (%s) but '%s' is %s (%s): a training_step's optimizers "
        .. "must be of one kind with the same state for now", o.name, o.opt.kind, layout, rule0.name, rule0.kind, rule0.layout))
    end
    rule0 = rule0 or { kind = o.opt.kind, layout = layout, name = o.name }
    local r = { name = o.name, index = #out + 1, opt = o.opt, params = params, subs = o.params, where = o.opt.where }
    out[#out + 1] = r
    by_name[o.name] = r
  end
  return out, by_name
end

-- The `fabric` a training_step receives: backward, and the declared optimizers with
-- step and zero_grad.  Every call appends an event at the current count of ops.
local function fabric_object(events, by_name, names, logs)
  local function check_self(self, proxy, name, method)
    if self ~= proxy then
      diag.fatal(nil, string.format("call it with a colon: fabric.optimizers.%s:%s()", name, method))
    end
  end
  local optimizers = {}
  for name, o in pairs(by_name) do
    local proxy = {}
    local methods = {}
    for _, kind in ipairs { "step", "zero_grad" } do
      methods[kind] = function(self)
        check_self(self, proxy, name, kind)
        events[#events + 1] = { kind = kind, opt = o, at = tensor.node_count(), where = diag.here() }
      end
    end
    optimizers[name] = setmetatable(proxy, {
      __index = function(_, k)
        if methods[k] then return methods[k] end
        diag.fatal(nil, string.format("an optimizer has step() and zero_grad(), not '%s'", tostring(k)))
      end,
      __newindex = function() diag.fatal(nil, "an optimizer's fields cannot be assigned") end,
    })
  end
  local opt_view = setmetatable({}, {
    __index = function(_, k)
      if optimizers[k] then return optimizers[k] end
      diag.fatal(nil, string.format("fabric.optimizers has no optimizer '%s'%s (train.optimizers declares: %s)", tostring(k),
        util.did_you_mean(tostring(k), names), table.concat(names, ", ")))
    end,
    __newindex = function() diag.fatal(nil, "fabric.optimizers cannot be assigned: declare optimizers in train.optimizers") end,
  })
  local fields = {
    optimizers = opt_view,
    backward = function(loss)
      if not tensor.is(loss) or #loss.shape ~= 0 then
        diag.fatal(nil, string.format("fabric.backward: the loss must be a scalar tensor (use a reduction such as mean), got %s",
          tensor.is(loss) and ("a tensor " .. util.shape_str(loss.shape)) or type(loss)))
      end
      events[#events + 1] = { kind = "backward", loss = loss, at = tensor.node_count(), where = diag.here() }
    end,
    -- Fabric's fabric.log(name, value) and fabric.log_dict({ name = value, ... }): a value
    -- the step computes, logged as train.log's metrics are (user_step.metrics)
    log = function(name, value)
      logs[#logs + 1] = { name = name, value = value, where = diag.here() }
    end,
    log_dict = function(d)
      if type(d) ~= "table" or tensor.is(d) then
        diag.fatal(nil, string.format("fabric.log_dict takes a table { name = scalar tensor, ... }, got %s", tensor.is(d) and "a tensor" or type(d)))
      end
      local where, keys = diag.here(), {}
      for k in pairs(d) do keys[#keys + 1] = k end
      table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
      for _, k in ipairs(keys) do logs[#logs + 1] = { name = k, value = d[k], where = where } end
    end,
  }
  return setmetatable({}, {
    __index = function(_, k)
      if fields[k] then return fields[k] end
      diag.fatal(nil, string.format("fabric has no '%s' in a training_step (it has: backward, optimizers, log, log_dict)%s", tostring(k),
        util.did_you_mean(tostring(k), { "backward", "optimizers", "log", "log_dict" })))
    end,
    __newindex = function(_, k) diag.fatal(nil, string.format("cannot assign fabric.%s", tostring(k))) end,
  })
end

-- Traces train.training_step.  `run_trace(name, fn)` traces fn into a fresh trace
-- (gen/graph.lua's), `batch()` makes the batch.  Returns the trace (its outputs[1]: the
-- loss the step returns, which the loop logs) and the step { events, optimizers,
-- by_name, where }.
function user_step.trace(g, sp, run_trace, batch)
  local tr = sp.train
  local optimizers, by_name = resolve_optimizers(g, tr.optimizers)
  local names = {}
  for _, o in ipairs(optimizers) do names[#names + 1] = o.name end
  local events, logs = {}, {}
  local holder = {}
  local fabric = fabric_object(events, by_name, names, logs)
  local t = run_trace("training_step", function()
    holder.b = batch()
    return tr.training_step(fabric, sp.model, holder.b)
  end)
  t.input_value = holder.b
  local where = diag.key_where(tr.where, "training_step") or tr.where
  local backs = 0
  for _, e in ipairs(events) do if e.kind == "backward" then backs = backs + 1 end end
  if backs == 0 then diag.fatal(where, "training_step calls fabric.backward(loss) nowhere: there is nothing to train") end
  local out = t.outputs[1]
  if out == nil then
    -- nothing returned: the loop logs the last backward's loss
    for i = #events, 1, -1 do if events[i].kind == "backward" then out = events[i].loss; break end end
    t.outputs = table.pack(out)
  elseif not tensor.is(out) or #out.shape ~= 0 then
    diag.fatal(where, string.format("training_step returns the loss to log: a scalar tensor, got %s",
      tensor.is(out) and ("a tensor " .. util.shape_str(out.shape)) or type(out)))
  end
  if #logs > 0 or next(tr.log_reduce or {}) then t.metrics = user_step.metrics(sp, logs) end
  return t, { events = events, optimizers = optimizers, by_name = by_name, where = where }
end

-- fabric.log / fabric.log_dict's values as train.log's metrics (gen/graph.lua's
-- graph.metrics: { { name, tensor, reduce, where } } in name order): each a scalar float
-- tensor of the step, read after model_user_step (and after validation's forward), logged
-- as train/NAME, train/NAME_epoch, val/NAME and test/NAME, reduced by train.log_reduce.
-- Unlike train.log's nodes, they are not marked `metric`: a logged loss is differentiated.
function user_step.metrics(sp, logs)
  local tr = sp.train
  local builtin = "is a built-in metric"
  local keys = { ["train/loss"] = builtin, ["train/loss_epoch"] = builtin, ["train/throughput"] = builtin,
                 ["train/grad_norm"] = builtin, ["val/loss"] = builtin, ["test/loss"] = builtin }
  local list, seen = {}, {}
  for _, e in ipairs(logs) do
    local name, v = e.name, e.value
    if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
      diag.error(e.where, string.format("fabric.log: metric names are identifiers (letters, digits, _), got %s", tostring(name)))
    elseif seen[name] then
      diag.error(e.where, string.format("fabric.log: '%s' is logged twice in the step (first on line %d); log each name once",
        name, seen[name].line))
    elseif not tensor.is(v) or #v.shape ~= 0 or v.dtype ~= "float" then
      diag.error(e.where, string.format("fabric.log: metric '%s' must be a scalar float tensor (use a reduction such as mean), got %s",
        name, tensor.is(v) and ("a tensor " .. util.shape_str(v.shape)) or type(v)))
    else
      seen[name] = e.where
      list[#list + 1] = { name = name, tensor = v, reduce = tr.log_reduce[name] or "mean", where = e.where }
    end
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  require("graph").claim_metric_keys(list, keys, "fabric.log")
  for name in pairs(tr.log_reduce) do
    if not seen[name] then
      local names = {}
      for _, m in ipairs(list) do names[#names + 1] = m.name end
      diag.error(diag.key_where(tr.where, "log_reduce") or tr.where,
        string.format("log_reduce names '%s', which the training_step does not log%s", name, util.did_you_mean(name, names)))
    end
  end
  diag.check()
  return #list > 0 and list or nil
end

---------------------------------------------------------------------------
-- Autodiff (the autodiff stage)

-- `trace`: the precision plan's trace (copies of the traced nodes, casts among them);
-- `step`: the graph's.  Returns autodiff's table for the returned loss (backward,
-- needs_grad, grad_inputs: model_forward/model_backward, validation and gradcheck use
-- it) plus `segments`, the program in order:
--   { kind = "forward", first, last }   trace nodes first..last
--   { kind = "backward", loss, nodes (run order), params = { name = true }, where }
--   { kind = "step" | "zero_grad", opt, where }
function user_step.differentiate(trace, step, frozen)
  frozen = frozen or {}
  for _, o in ipairs(step.optimizers) do
    local live = 0
    for _, name in ipairs(o.params) do if not frozen[name] then live = live + 1 end end
    if live == 0 then
      diag.fatal(o.where, string.format("optimizer '%s' updates only parameters train.freeze freezes (%s): torch.optim would "
        .. "step nothing; freeze fewer, or remove the optimizer and its calls", o.name, table.concat(o.params, ", ")))
    end
  end
  local ad = require("autodiff").differentiate(trace, frozen)
  local needs, grad_inputs = ad.needs_grad, ad.grad_inputs
  -- each trace node's position among the traced ops (a cast: its consumer's)
  local orig_pos, producer = {}, {}
  local nxt = math.huge
  for i = #trace.nodes, 1, -1 do
    local node = trace.nodes[i]
    if node.original then nxt = node.original.index end
    orig_pos[node] = nxt
    producer[node.out] = node
  end
  local function pos_of(at)   -- trace nodes with orig_pos <= at run before an event at `at`
    local n = 0
    for i, node in ipairs(trace.nodes) do if orig_pos[node] <= at then n = i end end
    return n
  end

  local segments, done = {}, 0
  local traversed = {}            -- node → the backward event that went through it
  local stepped = {}              -- param name → { { index, event } } steps so far
  -- the nodes a backward from `loss` runs (latest first) and the parameters it reaches
  local function backward_of(loss)
    local seen, nodes, params, stack = {}, {}, {}, { loss }
    while #stack > 0 do
      local t = table.remove(stack)
      local node = producer[t]
      if node and needs[t] and not seen[node] then
        seen[node] = true
        nodes[#nodes + 1] = node
        for i, x in ipairs(node.inputs) do
          if grad_inputs[node][i] then
            if x.param then params[x.param] = true else stack[#stack + 1] = x end
          end
        end
      end
    end
    table.sort(nodes, function(a, b) return a.index > b.index end)
    return nodes, params
  end
  local function forward_to(p)
    if p > done then
      segments[#segments + 1] = { kind = "forward", first = done + 1, last = p }
      done = p
    end
  end
  for j, e in ipairs(step.events) do
    local p = pos_of(e.at)
    forward_to(p)
    if e.kind == "backward" then
      local L = e.loss
      if not needs[L] then
        diag.fatal(e.where, "fabric.backward: the loss does not require a gradient (it depends on no parameter, "
          .. "or only through detach or no_grad): PyTorch refuses this backward too")
      end
      local nodes, params = backward_of(L)
      for _, node in ipairs(nodes) do
        if traversed[node] and not ops[node.op].alias then
          diag.fatal(e.where, string.format("fabric.backward: this backward goes through %s (line %d) again, after the backward on line %d: "
            .. "PyTorch frees the graph after a backward (retain_graph); compute it again or detach", node.op, (node.call_where or node.where).line,
            traversed[node].where.line))
        end
        for i, x in ipairs(node.inputs) do
          if x.param and grad_inputs[node][i] then
            for _, s in ipairs(stepped[x.param] or {}) do
              if orig_pos[node] <= s.event.at then
                diag.fatal(e.where, string.format("fabric.backward: %s was read on line %d and then updated by %s:step() on line %d: "
                  .. "PyTorch refuses this backward (a tensor it needs was modified in place); run the forward again after the step",
                  x.param, (node.call_where or node.where).line, s.event.opt.name, s.event.where.line))
              end
            end
          end
        end
      end
      for _, node in ipairs(nodes) do traversed[node] = e end
      segments[#segments + 1] = { kind = "backward", loss = L, nodes = nodes, params = params, where = e.where }
    else
      if e.kind == "step" then
        for _, name in ipairs(e.opt.params) do
          if frozen[name] then goto continue end   -- (never updated)
          stepped[name] = stepped[name] or {}
          table.insert(stepped[name], { index = j, event = e })
          ::continue::
        end
      end
      segments[#segments + 1] = { kind = e.kind, opt = e.opt, where = e.where }
    end
  end
  forward_to(#trace.nodes)
  -- model_forward/model_backward: the loss the step returns, at fixed weights (validation
  -- and gradcheck use them): its backward is what that loss reaches
  local R = trace.outputs[1]
  if not needs[R] then
    diag.fatal(step.where, "training_step returns a loss that requires no gradient (detached, or made under no_grad): "
      .. "return one of the losses it differentiates")
  end
  ad.backward = backward_of(R)

  -- gradients across training steps: simulate two steps.  A gradient is "clean" at a
  -- step's start (the loop zeroes every gradient after the step); an optimizer's step
  -- must see, for each of its parameters, gradients a backward made since that
  -- parameter's last zero_grad in this step or since the step began, and at least one.
  -- Then the first step and every later one compute what PyTorch's do.
  local carried = {}   -- param → the backward event whose gradient the next step would inherit
  local reached = {}   -- param → reached by a backward since its last zeroing
  local zeroed = {}    -- param → zero_grad called for it in this step
  for _, s in ipairs(segments) do
    if s.kind == "backward" then
      for name in pairs(s.params) do reached[name] = true; carried[name] = s end
    elseif s.kind == "zero_grad" then
      for _, name in ipairs(s.opt.params) do reached[name] = nil; zeroed[name] = true; carried[name] = nil end
    elseif s.kind == "step" then
      for _, name in ipairs(s.opt.params) do
        if not reached[name] and not frozen[name] then   -- (a frozen one has no gradient: torch.optim skips it)
          diag.fatal(s.where, string.format("%s:step() updates %s, which no fabric.backward reached since it was last zeroed: torch.optim would "
            .. "skip it on the first step (its grad is None) and not later; give the optimizer only what its backward reaches", s.opt.name, name))
        end
      end
    end
  end
  -- in PyTorch the next step starts with the gradients left now (loom's loop zeroes them):
  -- refused where a step would read them before its optimizer's zero_grad
  local seen_zero = {}
  for _, s in ipairs(segments) do
    if s.kind == "zero_grad" then for _, name in ipairs(s.opt.params) do seen_zero[name] = true end
    elseif s.kind == "step" then
      for _, name in ipairs(s.opt.params) do
        if carried[name] and not seen_zero[name] then
          diag.fatal(s.where, string.format("%s:step() would also use the gradient of %s left from the previous training step by the backward "
            .. "on line %d (PyTorch keeps gradients until zero_grad): call fabric.optimizers.%s:zero_grad() before this step's backward",
            s.opt.name, name, carried[name].where.line, s.opt.name))
        end
      end
    end
  end
  ad.segments = segments
  return ad
end

---------------------------------------------------------------------------
-- The C backend

-- Refusals before any work (emit_c.check, emit_cuda.check): what the user step does not
-- do yet on `backend` (either runs every precision the backend runs: the CUDA backend's
-- gen/emit_cuda.lua, 32-true, bf16-mixed, 16-mixed, bf16-true and 16-true, and
-- train.freeze; there clip, a scheduler, fabric.log, parameter groups and several devices
-- are refused).
-- bf16-mixed and 16-mixed: each call of the model in the step casts as Fabric's module
-- call under autocast (gen/precision.lua, its casts scoped by the step's events);
-- 16-mixed adds Fabric's one GradScaler (optim_c: each backward scaled, each optimizer's
-- step unscaled and skipped on inf/nan, the scale updated after it).  bf16-true and
-- 16-true: Fabric's HalfPrecision, no scaler: parameters, gradients and optimizer state
-- in 16 bits (16-true's moments float32, as the built-in step's), each call of the model
-- taking its float inputs to the half type (convert_input, gen/precision.lua) and giving
-- its outputs back in float32 (convert_output).  detect_anomaly: every op of the step.
function user_step.check(g, target, precision, backend)
  local sp, st = g.spec, g.step
  local tr = sp.train
  local where = st.where
  local cuda = backend == "cuda"
  local function refuse(key, what, why)
    diag.fatal(diag.key_where(tr.where, key) or tr.where, what .. " with a training_step is not supported yet" .. (why and (" (" .. why .. ")") or ""))
  end
  if tr.accumulate ~= 1 then
    -- Fabric has no accumulation of its own: a Fabric step accumulates by stepping its
    -- optimizers every N batches (fabric.no_backward_sync around the others), a choice
    -- a step traced once into straight-line C cannot make per batch
    diag.fatal(diag.key_where(tr.where, "accumulate") or tr.where, "accumulate with a training_step is not supported: the step is traced "
      .. "once and runs whole on every batch, so it cannot step every N batches as a Fabric step with no_backward_sync does; "
      .. "give batch_size = N × the micro-batch instead (the same update for a mean loss, BatchNorm aside)")
  end
  if tr.clip and cuda then refuse("clip", "clip (fabric.clip_gradients)", "by the CUDA backend; the CPU backend runs it") end
  local sched = tr.scheduler
  if sched and cuda then refuse("scheduler", "a scheduler", "by the CUDA backend; the CPU backend runs it") end
  if sched and sched.kind == "ReduceLROnPlateau" then
    refuse("scheduler", "ReduceLROnPlateau", "its lr is run state: each optimizer would need its own")
  end
  if sched and sched.kind == "OneCycleLR" and sched.args.cycle_momentum then
    refuse("scheduler", "OneCycleLR's cycle_momentum", "give cycle_momentum = false")
  end
  if tr.hooks then refuse("hooks", "hooks") end
  if tr.log then
    diag.fatal(diag.key_where(tr.where, "log") or tr.where, "train.log with a training_step: log from the step itself, "
      .. "as in Fabric: fabric.log_dict({ name = value, ... }) or fabric.log(name, value)")
  end
  if cuda and g.loss.metrics then
    diag.fatal(g.loss.metrics[1].where, "fabric.log in a training_step is not supported yet by the CUDA backend (the CPU backend runs it)")
  end
  for _, o in ipairs(cuda and st.optimizers or {}) do
    local a = o.opt.args
    if a.groups or ((a.decay_min_ndim or 0) > 0 and (a.weight_decay or 0) ~= 0) then
      diag.fatal(o.where, string.format("optimizer '%s': parameter groups (groups, decay_min_ndim) in a training_step are not supported "
        .. "by the CUDA backend yet (the CPU backend runs them)", o.name))
    end
  end
  -- (ddp on the CPU: gen/strategy.lua's `averaged`; fsdp's sharding is refused by strategy.check)
  if cuda and require("strategy").requested(sp, target) ~= "single" then
    refuse("training_step", "several devices (ddp)", "by the CUDA backend; the CPU backend runs ddp")
  end
end

-- model.c's functions of the step: step_forward_K and step_backward_K (each with the
-- operands it uses), and their prototypes.  `forward_lines(list)` writes forward ops
-- (gen/emit_c.lua's), `node_comment(node, suffix)` the spec line above an op.
function user_step.model_c(l, forward_lines, node_comment)
  local kernels_c, ops_cpu = require "kernels_c", require "ops_cpu"
  local ty = kernels_c.TYPES[l.settings.compute]
  local trace, pp = l.trace, l.pp
  local text, protos, wide = {}, {}, 1
  local nf, nb = 0, 0
  local function body(e, lines)
    return table.concat(e.decls, "\n") .. "\n    (void)m; (void)batch; (void)B;\n" .. table.concat(lines, "\n")
  end
  for _, s in ipairs(l.autodiff.segments) do
    if s.kind == "forward" then
      local e = kernels_c.context(l, ty)
      e.grad = function() return "NULL" end
      local list = {}
      for i = s.first, s.last do
        local node = trace.nodes[i]
        if not pp.folded[node] then
          local lines
          if not ops[node.op].alias then
            e.begin(node, "forward")
            lines = e.wrap(ops_cpu[node.op].forward(e, node))
            if l.options.detect_anomaly then   -- (each op's output checked for NaN/Inf, as the built-in step's)
              for _, x in ipairs(kernels_c.anomaly_lines(l, e, node, "forward")) do lines[#lines + 1] = x end
            end
          end
          list[#list + 1] = { node = node, lines = lines }
        end
      end
      s.func = string.format("step_forward_%d", nf)
      nf = nf + 1
      local proto = string.format("void %s(Model *m, const Batch *batch, int B, int training)", s.func)
      protos[#protos + 1] = proto .. ";"
      text[#text + 1] = string.format("\n// the training_step's ops %d..%d, in the order the spec runs them\n%s {\n%s\n    (void)training;\n%s\n}\n",
        s.first, s.last, proto, table.concat(e.decls, "\n") .. "\n    (void)m; (void)batch; (void)B;", table.concat(forward_lines(list), "\n"))
      wide = math.max(wide, e.wide_size())
    elseif s.kind == "backward" then
      local e = kernels_c.context(l, ty)
      local lines = {}
      for _, node in ipairs(s.nodes) do
        if not (ops[node.op].alias or pp.folded[node]) then
          e.begin(node, "backward")
          lines[#lines + 1] = ""
          lines[#lines + 1] = node_comment(node, "  (backward)")
          local body = e.wrap(ops_cpu[node.op].backward(e, node))
          if l.options.detect_anomaly then   -- (the gradients it added to checked for NaN/Inf)
            for _, x in ipairs(kernels_c.anomaly_lines(l, e, node, "backward")) do body[#body + 1] = x end
          end
          for _, x in ipairs(body) do lines[#lines + 1] = "    " .. x end
        end
      end
      e.begin(nil, "result")
      local dloss = e.grad(s.loss)
      if e.uses_training then table.insert(e.decls, "    const int training = 1;") end
      s.func = string.format("step_backward_%d", nb)
      nb = nb + 1
      local proto = string.format("void %s(Model *m, const Batch *batch, int B, real dloss)", s.func)
      protos[#protos + 1] = proto .. ";"
      text[#text + 1] = string.format("\n// fabric.backward(loss) on line %d: %d ops; parameter gradients add up (zero_grad clears them)\n%s {\n%s\n"
        .. "%s\n    %s[0] = dloss;\n%s\n}\n", s.where.line, #s.nodes, proto,
        body(e, {}), kernels_c.dact_zero_lines(l.plan), dloss, table.concat(lines, "\n"))
      wide = math.max(wide, e.wide_size())
    end
  end
  -- the value of the loss the step returns (after every forward ran)
  local e = kernels_c.context(l, ty, true)
  e.begin(nil, "result")
  local ptr = e.ptr(trace.outputs[1])
  protos[#protos + 1] = "real step_result(const Model *m);"
  text[#text + 1] = string.format("\n// the loss training_step returns (logged)\nreal step_result(const Model *m) {\n%s\n    return %s[0];\n}\n",
    table.concat(e.decls, "\n"), ptr)

  -- for a gradient check of each backward (tests/harness/gradcheck.c): every forward run
  -- without the updates between them, backward K, its loss, and the parameters it reaches
  local fwd, cases, losses, rows = {}, {}, {}, {}
  local el = kernels_c.context(l, ty, true)
  local k = 0
  for _, s in ipairs(l.autodiff.segments) do
    if s.kind == "forward" then fwd[#fwd + 1] = string.format("    %s(m, batch, B, training);", s.func)
    elseif s.kind == "backward" then
      cases[#cases + 1] = string.format("    case %d: %s(m, batch, B, dloss); break;", k, s.func)
      el.begin(nil, "result")
      losses[#losses + 1] = string.format("    case %d: return %s[0];   // line %d", k, el.ptr(s.loss), s.where.line)
      local row = {}
      for _, p in ipairs(l.state.params) do row[#row + 1] = s.params[p.name] and "1" or "0" end
      rows[#rows + 1] = "    { " .. table.concat(row, ", ") .. " },"
      k = k + 1
    end
  end
  protos[#protos + 1] = string.format("#define LOOM_STEP_BACKWARDS %d   // fabric.backward calls in a training step", k)
  protos[#protos + 1] = "void step_forward_all(Model *m, const Batch *batch, int B, int training);   // every forward, no update"
  protos[#protos + 1] = "void step_backward(int k, Model *m, const Batch *batch, int B, real dloss);   // backward k"
  protos[#protos + 1] = "real step_loss(const Model *m, int k);   // backward k's loss"
  protos[#protos + 1] = "int step_reaches(int k, int param_tensor);   // does backward k give that parameter a gradient"
  text[#text + 1] = string.format("\n// (a gradient check of each backward: tests/harness/gradcheck.c)\n"
    .. "void step_forward_all(Model *m, const Batch *batch, int B, int training) {\n%s\n}\n"
    .. "void step_backward(int k, Model *m, const Batch *batch, int B, real dloss) {\n    switch (k) {\n%s\n    default: break;\n    }\n}\n"
    .. "real step_loss(const Model *m, int k) {\n%s\n    switch (k) {\n%s\n    default: return 0;\n    }\n}\n"
    .. "int step_reaches(int k, int param_tensor) {\n    static const unsigned char reaches[%d][%d] = {\n%s\n    };\n"
    .. "    return reaches[k][param_tensor];\n}\n",
    table.concat(fwd, "\n"), table.concat(cases, "\n"), table.concat(el.decls, "\n"), table.concat(losses, "\n"),
    k, #l.state.params, table.concat(rows, "\n"))
  return table.concat(text), table.concat(protos, "\n"), wide
end

-- Optimizer `o`'s parameters in the layout (plan.lua's state.params) as runs of
-- neighbours { begin, finish, names } (finish: the last one's end, without padding),
-- without the `frozen` ones (train.freeze: requires_grad = False, so torch.optim, its
-- zero_grad, clip_gradients and the GradScaler never see a gradient of theirs).
function user_step.runs(params, o, frozen)
  local mine = {}
  for _, name in ipairs(o.params) do mine[name] = not (frozen and frozen[name]) end
  local runs = {}
  for i, p in ipairs(params) do
    if mine[p.name] then
      local last = runs[#runs]
      local finish = p.offset + p.numel
      if last and last.next_index == i then
        last.finish, last.count, last.last, last.next_index = finish, last.count + 1, p.name, i + 1
      else
        runs[#runs + 1] = { begin = p.offset, finish = finish, first = p.name, last = p.name, count = 1, next_index = i + 1 }
      end
    end
  end
  for _, r in ipairs(runs) do
    r.names = r.count == 1 and r.first or string.format("%s .. %s (%d tensors)", r.first, r.last, r.count)
  end
  return runs
end

-- Optimizer `o`'s momentum argument of the update (beta1, SGD's momentum; 0 without)
function user_step.momentum(o)
  local rule = require("optimizers").rule(o.opt.kind)
  return rule.momentum and rule.momentum(o.opt.args) or 0.0
end

-- train.clip in a training_step: Fabric's clip_gradients(model, optimizer, ...) before
-- each optimizer's step, over that optimizer's parameters (Fabric clips
-- precision.main_params(optimizer)): torch.nn.utils.clip_grad_norm_ (the norm of all its
-- gradients together, coef = max_norm / (norm + 1e-6), applied when below 1) or
-- clip_grad_value_.  The sums in double, in layout order.  C of clip_<name>(m).
-- `LD(x)`, `ST(x)`: a gradient's load and store as C (16-bit gradients at bf16-true and
-- 16-true: widened to float, the clipped value rounded back).
local function clip_c(c, o, runs, LD, ST)
  local lit = function(v) return util.c_float(v, "") end
  local G = LD("m->grads[i]")
  local over = {}
  for _, r in ipairs(runs) do over[#over + 1] = string.format("{ %d, %d }", r.begin, r.finish) end
  local lines = {
    string.format("    static const size_t runs[%d][2] = { %s };   // %s's parameters in the layout", #runs, table.concat(over, ", "), o.name),
  }
  local each = "    for (int r = 0; r < %d; r++) for (size_t i = runs[r][0]; i < runs[r][1]; i++) %s"
  if c.clip_val then
    lines[#lines + 1] = string.format("    const real v = %s;", lit(c.clip_val))
    lines[#lines + 1] = string.format(each, #runs, string.format("{ const real g = %s; m->grads[i] = %s; }", G,
      ST("g > v ? v : (g < -v ? -v : g)")))
    return table.concat(lines, "\n"), string.format("clip_grad_value_(%s)", lit(c.clip_val))
  end
  lines[#lines + 1] = "    double total = 0;"
  if c.norm_type == math.huge then
    lines[#lines + 1] = string.format(each, #runs, string.format("total = fmax(total, fabs((double)%s));", G))
  elseif c.norm_type == 2 then
    lines[#lines + 1] = string.format(each, #runs, string.format("{ const double g = %s; total += g * g; }", G))
    lines[#lines + 1] = "    total = sqrt(total);"
  else
    lines[#lines + 1] = string.format(each, #runs, string.format("total += pow(fabs((double)%s), %s);", G, lit(c.norm_type)))
    lines[#lines + 1] = string.format("    total = pow(total, 1.0 / %s);", lit(c.norm_type))
  end
  lines[#lines + 1] = string.format("    const double coef = %s / (total + 1e-6);", lit(c.max_norm))
  lines[#lines + 1] = "    if (coef >= 1) return;"
  lines[#lines + 1] = string.format(each, #runs, string.format("m->grads[i] = %s;", ST(G .. " * (real)coef")))
  return table.concat(lines, "\n"), string.format("clip_grad_norm_(max_norm=%s, norm_type=%s)", lit(c.max_norm),
    c.norm_type == math.huge and "inf" or lit(c.norm_type))
end

-- 16-mixed: what the Optimizer struct keeps for the GradScaler (lines of C for
-- emit_train's optimizer fields, alloc, save, load): Fabric's one scaler (every
-- optimizer's step updates it), each optimizer's count of updates taken (a skipped step
-- does not count: Adam's bias correction reads it) and the steps skipped in this run.
-- `S`: emit_train.SCALER; `counts`: the name of the counts' array ("steps"; the CUDA
-- program's Optimizer has a `steps` of its own, the training steps: "opt_steps"), whose
-- fields without the scaler's are `count_fields` and `count_alloc`.
function user_step.scaler_state(l, S, counts)
  counts = counts or "steps"
  local opts = l.graph.step.optimizers
  local names = {}
  for _, o in ipairs(opts) do names[#names + 1] = o.name end
  local r = {
    count_fields = {
      string.format("    int64_t %s[%d];     // each optimizer's updates taken (%s; torch's state['step']): skipped steps do not count",
        counts, #opts, table.concat(names, ", ")),
      "    int64_t skipped;      // optimizer steps the loss scaler skipped in this run",
    },
    count_alloc = { string.format("    for (int k = 0; k < %d; k++) o->%s[k] = 0;", #opts, counts), "    o->skipped = 0;" },
    save = {},
    load = { "    double scale = 0;" },
  }
  r.fields = { r.count_fields[1], r.count_fields[2],
    "    GradScaler scaler;    // 16-mixed's loss scale: Fabric's one GradScaler, updated after every optimizer's step" }
  r.alloc = { r.count_alloc[1], r.count_alloc[2], "    scaler_init(&o->scaler);" }
  local conds = {}
  for _, o in ipairs(opts) do
    r.save[#r.save + 1] = string.format("    ckpt_writer_set_meta_i64(&w, \"optimizer.%s.steps\", o->%s[%d]);", o.name, counts, o.index - 1)
    conds[#conds + 1] = string.format("ckpt_meta_get_i64_in(&f, \"optimizer.%s.steps\", 0, CKPT_MAX_COUNT, &o->%s[%d])", o.name, counts, o.index - 1)
  end
  r.save[#r.save + 1] = "    ckpt_writer_set_meta_f64(&w, \"scaler.scale\", o->scaler.scale);"
  r.save[#r.save + 1] = "    ckpt_writer_set_meta_i64(&w, \"scaler.growth_tracker\", o->scaler.growth_tracker);"
  conds[#conds + 1] = "ckpt_meta_get_f64(&f, \"scaler.scale\", &scale)"
  conds[#conds + 1] = string.format("ckpt_meta_get_i64_in(&f, \"scaler.growth_tracker\", 0, %d, &o->scaler.growth_tracker)", S.growth_interval)
  r.load[#r.load + 1] = "    if (" .. table.concat(conds, " ||\n        ") .. ")"
  r.load[#r.load + 1] = "        die(f.err);"
  r.load[#r.load + 1] = "    if (!(scale > 0 && scale <= 3.4028234663852886e38)) { fprintf(stderr, \"%s: metadata 'scaler.scale' is %g, not a loss scale\\n\", path, scale); exit(1); }"
  r.load[#r.load + 1] = "    o->scaler.scale = (float)scale;"
  return r
end

-- How many times each optimizer steps in one training step (segments' `step`s)
function user_step.steps_per(segments)
  local per = {}
  for _, s in ipairs(segments) do
    if s.kind == "step" then per[s.opt] = (per[s.opt] or 0) + 1 end
  end
  return per
end

-- optim.c's part: each optimizer's step over its own parameters and its zero_grad, its
-- learning rate, and model_user_step (the step as the spec wrote it).  `code(opt, runs)`:
-- emit_train's optimizer_code for `opt` restricted to `runs` ({ begin, finish, names }),
-- with `lr_body`, `sched_desc`: its lr_at's body and description.
--
-- train.scheduler: each optimizer gets its own instance of the spec's scheduler, on its
-- own lr (Fabric users with several optimizers make one scheduler per optimizer, and
-- step each once per training step: a GAN's D and G decay alike from their own lrs; a
-- scheduler's count is the training step, or the epoch with interval = "epoch").  An
-- optimizer stepping twice in a training step takes one lr for both.
function user_step.optim_c(l, code)
  local st, lit = l.state, function(v) return util.c_float(v, "") end
  local steps_of = user_step.steps_per(l.autodiff.segments)   -- optimizer → its steps in a training step
  local scaling = l.settings.loss_scaling   -- 16-mixed: Fabric's GradScaler around each backward and step
  local text, protos = { "\n#include <math.h>     // sqrt, fabs: train.clip\n#include <string.h>   // memset: zero_grad\n" }, {}
  for _, o in ipairs(l.graph.step.optimizers) do
    local runs = user_step.runs(st.params, o, l.graph.frozen)
    local set = {}
    for _, name in ipairs(o.params) do set[name] = true end
    local c = code(o.opt, runs, { name = o.name, params = '"' .. table.concat(o.subs, '", "') .. '"', set = set })
    local mom = user_step.momentum(o)
    text[#text + 1] = string.format("\n// optimizer '%s' (spec line %d): %s, over %s\n"
      .. "static void optimizer_step_%s(Optimizer *o, Model *m, double lr, double mom, int64_t step) {\n%s\n}\n",
      o.name, o.where.line, c.desc, table.concat(o.params, ", "), o.name, c.step)
    if scaling then
      local over = {}
      for _, r in ipairs(runs) do over[#over + 1] = string.format("{ %d, %d }", r.begin, r.finish) end
      text[#text + 1] = string.format("\n// GradScaler.unscale_(%s) (scaler.step(%s)'s first half): its parameters' gradients times\n"
        .. "// 1/scale; 1 when one of them is inf or NaN (found_inf: the step is skipped)\n"
        .. "static int unscale_%s(const GradScaler *s, Model *m) {\n"
        .. "    static const size_t runs[%d][2] = { %s };   // %s's parameters in the layout\n"
        .. "    const real inv_scale = (real)(1.0 / (double)s->scale);   // scale.double().reciprocal().float()\n"
        .. "    int found_inf = 0;\n"
        .. "    for (int r = 0; r < %d; r++)\n"
        .. "        for (size_t i = runs[r][0]; i < runs[r][1]; i++) {\n"
        .. "            found_inf |= !isfinite(m->grads[i]);\n"
        .. "            m->grads[i] *= inv_scale;\n"
        .. "        }\n"
        .. "    return found_inf;\n}\n", o.name, o.name, o.name, #runs, table.concat(over, ", "), o.name, #runs)
    end
    local clip = l.spec.train.clip
    if clip then
      local body, desc = clip_c(clip, o, runs, c.LD, c.ST)
      text[#text + 1] = string.format("\n// train.clip before %s:step(), over its parameters only (fabric.clip_gradients(model, %s, ...)): %s\n"
        .. "static void clip_%s(Model *m) {\n%s\n}\n", o.name, o.name, desc, o.name, body)
    end
    text[#text + 1] = string.format("\n// optimizer '%s''s learning rate at training step `step` (0-based) in epoch `epoch`: %s\n"
      .. "static double lr_at_%s(int64_t step, int64_t epoch, int64_t total_steps) {\n%s\n}\n", o.name, c.sched_desc, o.name, c.lr_body)
    local zero = {}
    for _, r in ipairs(runs) do
      zero[#zero + 1] = string.format("    memset(m->grads + %d, 0, sizeof(state_t) * %d);   // %s", r.begin, r.finish - r.begin, r.names)
    end
    text[#text + 1] = string.format("\n// %s.zero_grad(): its parameters' gradients only\nstatic void zero_grad_%s(Model *m) {\n%s\n}\n",
      o.name, o.name, table.concat(zero, "\n"))
    o.c_mom, o.per_step = lit(mom), steps_of[o] or 0
  end
  -- DDP (gen/strategy.lua's `averaged`): before an optimizer's step (and its unscale and
  -- clip, which read the gradients too), the mean over the ranks of its gradients that the
  -- backwards changed since they were last averaged
  local calls, count = {}, {}
  local ddp = l.strategy and l.strategy.kind == "ddp" and l.strategy.averaged
  if ddp then text[1] = text[1] .. "#include \"ddp.h\"    // ddp_average_grads: DDP's mean over the ranks before each step\n" end
  local function average(s)
    if not ddp then return end
    local strategy = require "strategy"
    local esize, lct = strategy.grad_type(l.settings)
    local rows = {}
    for _, b in ipairs(strategy.step_buckets(l, s, esize)) do
      rows[#rows + 1] = string.format("            { %d, %d },   // %s", b.first, b.last - b.first,
        #b.params == 1 and b.params[1] or string.format("%s .. %s (%d tensors)", b.params[1], b.params[#b.params], #b.params))
    end
    if #rows == 0 then
      calls[#calls + 1] = string.format("    // DDP: no gradient of %s's changed since it was averaged: no all-reduce before its step", s.opt.name)
      return
    end
    calls[#calls + 1] = string.format("    {   // DDP: %s's gradients that changed since they were averaged, their mean over the ranks", s.opt.name)
    calls[#calls + 1] = string.format("        static const ddp_bucket runs[%d] = {\n%s\n        };", #rows, table.concat(rows, "\n"))
    calls[#calls + 1] = string.format("        ddp_average_grads(m->grads, runs, %d, %s);\n    }", #rows, lct)
  end
  -- the step, in the spec's order
  for _, s in ipairs(l.autodiff.segments) do
    if s.kind == "step" then average(s) end
    if s.kind == "forward" then
      calls[#calls + 1] = string.format("    %s(m, batch, B, 1);", s.func)
    elseif s.kind == "backward" and scaling then
      calls[#calls + 1] = string.format("    %s(m, batch, B, (real)o->scaler.scale);   // fabric.backward, line %d: GradScaler.scale(loss), from loss × scale",
        s.func, s.where.line)
    elseif s.kind == "backward" then
      calls[#calls + 1] = string.format("    %s(m, batch, B, (real)1);   // fabric.backward, line %d", s.func, s.where.line)
    elseif s.kind == "step" and scaling then
      -- Fabric's MixedPrecision.optimizer_step: scaler.step(opt) (unscale its gradients, or
      -- fabric.clip_gradients did; skip the step on inf/nan), then scaler.update(): the
      -- scale a later backward starts from is the one after this step's update.  Each
      -- optimizer's count of updates is its own (a skipped step does not count).
      local o = s.opt
      calls[#calls + 1] = string.format("    {   // %s:step(), line %d, through the GradScaler", o.name, s.where.line)
      calls[#calls + 1] = string.format("        int found_inf = unscale_%s(&o->scaler, m);", o.name)
      if l.spec.train.clip then
        calls[#calls + 1] = string.format("        clip_%s(m);   // train.clip, over %s's unscaled gradients (fabric.clip_gradients unscales first)", o.name, o.name)
      end
      calls[#calls + 1] = "        if (!found_inf) {"
      calls[#calls + 1] = string.format("            optimizer_step_%s(o, m, lr_at_%s(step, epoch, total_steps), %s, o->steps[%d]);",
        o.name, o.name, o.c_mom, o.index - 1)
      calls[#calls + 1] = string.format("            o->steps[%d]++;", o.index - 1)
      calls[#calls + 1] = string.format("        } else {\n            o->skipped++;   // inf/nan: %s's parameters and state stay\n        }", o.name)
      calls[#calls + 1] = "        scaler_update(&o->scaler, found_inf);"
      calls[#calls + 1] = "    }"
    elseif s.kind == "step" then
      local o = s.opt
      count[o] = (count[o] or 0) + 1
      -- each optimizer's own count of updates (torch.optim's state['step'] - 1): a training
      -- step takes the same number every time
      if l.spec.train.clip then
        calls[#calls + 1] = string.format("    clip_%s(m);   // train.clip, over %s's parameters", o.name, o.name)
      end
      calls[#calls + 1] = string.format("    optimizer_step_%s(o, m, lr_at_%s(step, epoch, total_steps), %s, step * %d + %d);   // %s:step(), line %d",
        o.name, o.name, o.c_mom, o.per_step, count[o] - 1, o.name, s.where.line)
    else
      calls[#calls + 1] = string.format("    zero_grad_%s(m);   // %s:zero_grad(), line %d", s.opt.name, s.opt.name, s.where.line)
    end
  end
  protos[#protos + 1] = "#define LOOM_USER_STEP 1   // the program's step is the spec's training_step"
  protos[#protos + 1] = "// train.training_step (gen/user_step.lua): one training step on a batch; returns the loss it returns"
  protos[#protos + 1] = "// (step: the training steps before it; epoch, total_steps: the schedule's, as lr_at's)"
  protos[#protos + 1] = "real model_user_step(Model *m, Optimizer *o, const Batch *batch, int B, int64_t step, int64_t epoch, int64_t total_steps);"
  text[#text + 1] = string.format("\n// train.training_step (spec line %d), as straight-line calls in the spec's order\n"
    .. "real model_user_step(Model *m, Optimizer *o, const Batch *batch, int B, int64_t step, int64_t epoch, int64_t total_steps) {\n"
    .. "    m->step = (uint64_t)step;\n    (void)epoch; (void)total_steps;\n%s\n"
    .. "    return step_result(m);\n}\n", l.graph.step.where.line, table.concat(calls, "\n"))
  return table.concat(text), table.concat(protos, "\n")
end

return user_step
