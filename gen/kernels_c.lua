-- kernels_c: the C kernels' calls for a lowered table (gen/pipeline.lua) — the context
-- gen/ops_cpu.lua's rules get (on the shared operand context, gen/operands.lua) and
-- the walk over the training step in the order the C program runs it: the forward,
-- the loss, the backward, the loss's gradient, the metrics' operands.
--
-- gen/emit_c.lua writes model.c from the walk.  The walk's operand records are also
-- the precision plan's conversions (precision_plan.tsv, which both programs carry):
-- every float operand of a kernel in a format other than the compute type is converted
-- through the widening arena (m->wide) around the kernel, unless the op's rule calls a
-- kernel over that 16-bit storage (e.native: recorded as a "native" operand).
local util = require "util"
local ops = require "ops"
local ops_cpu = require "ops_cpu"
local operands = require "operands"

local kernels_c = {}

kernels_c.TYPES = {
  f32 = { ctype = "float", sfx = "f32", lit_suffix = "f" },
  f64 = { ctype = "double", sfx = "f64", lit_suffix = "" },
}

local cname = util.c_ident
local FORMATS = require("precision").FORMATS

-- The context of gen/ops_cpu.lua's rules (see there).  `read_only`: declare pointers
-- const (a function that takes a const Model).
--
-- Every operand goes through the precision plan: a tensor is stored in its root's
-- format and read as its own (e.chain).  Where that is the compute type, the kernel
-- gets the buffer itself.  Otherwise the operand is converted into the widening arena
-- (m->wide) around the op: loaded before it (inputs), stored after it (outputs), or,
-- for gradients the op adds into, summed into the tensor's format after it.
-- e.begin(node, phase) starts an op and e.wrap(lines) puts the conversions around
-- its kernel calls.
-- k_KERNEL_SFX(args...); (SFX: the compute type's f32/f64, or a storage format's bf16)
local function kernel_call(kernel, sfx, ...)
  local args = table.pack(...)
  for i = 1, args.n do args[i] = tostring(args[i]) end
  return string.format("k_%s_%s(%s);", kernel, sfx, table.concat(args, ", ", 1, args.n))
end

local function context(l, ty, read_only)
  local compute = l.pp.settings.compute
  local wide_used, wide_max = 0, 0
  local pre, post, slots, accums, natives = {}, {}, {}, {}, {}
  local e = operands.context(l, {
    batch = "B",
    literal = function(v) return util.c_float(v, ty.lit_suffix) end,
    counter = function(offset) return string.format("&m->counters[%d]", offset) end,
    begin = function() pre, post, slots, accums, natives, wide_used = {}, {}, {}, {}, {}, 0 end,
  })
  e.T, e.sfx, e.decls, e.declared, e.units_read = ty.ctype, ty.sfx, {}, {}, {}
  -- an inference program (loom export): ops emit only their eval-mode code (ops_cpu's
  -- by_mode), and the weights, which concurrent calls share, are const: a kernel that
  -- wrote one would not compile
  e.inference = l.inference
  local weights = l.inference and "const " or ""
  local function declare(name, line, writable)
    if not e.declared[name] then
      e.declared[name] = true
      if read_only and not writable then line = line:gsub("^    real %*", "    const real *") end
      e.decls[#e.decls + 1] = line
    end
    return name
  end
  local function ctype_of(f) return f == compute and "real" or FORMATS[f].ctype end

  -- the storage of a tensor (its root), typed in its format
  local function storage(t)
    local pl = e.place(t)
    local r, f = pl.root, pl.fmt or compute
    if pl.arena == "params" then
      -- which FSDP unit each op reads (FULL_SHARD gathers it first: emit_c.lua)
      if pl.unit and e.node then
        local u = e.units_read[e.node] or {}
        u[pl.unit] = r.param
        e.units_read[e.node] = u
      end
      return declare("p_" .. cname(r.param), string.format("    %s%s *p_%s = m->params + %d;   // %s %s",
        weights, ctype_of(f), cname(r.param), pl.offset, util.c_comment(r.param), util.shape_str(r.shape)))
    end
    if pl.arena == "batch" then
      local c = r.dtype == "int64" and "int64_t" or "real"
      e.uses_batch = true
      return declare("in_" .. cname(r.input), string.format("    const %s *in_%s = batch->%s;   // %s", c,
        cname(r.input), cname(r.input), util.shape_str(r.shape)))
    end
    local ct = ctype_of(f)
    return declare("a" .. r.id, string.format("    %s *a%d = (%s *)(m->acts + %d);   // %s%s", ct, r.id, ct, pl.offset,
      util.shape_str(r.shape), f ~= compute and (" " .. f) or ""))
  end
  local function grad_storage(t)
    local pl = e.grad_place(t)
    if not pl then return "NULL" end
    local r, ct = pl.root, ctype_of(pl.fmt or compute)
    if pl.arena == "grads" then
      return declare("g_" .. cname(r.param), string.format("    %s *g_%s = m->grads + %d;", ct, cname(r.param), pl.offset))
    end
    return declare("d" .. r.id, string.format("    %s *d%d = (%s *)(m->dacts + %d);   // grad of a%d", ct, r.id, ct, pl.offset, r.id))
  end
  e.raw, e.raw_grad = storage, grad_storage

  -- a float operand in the widening arena; how = "load", "store", "accum", "update";
  -- `formats`: the chain when t is not in the plan (a module buffer)
  local function widened(t, base, how, what, formats)
    if base == "NULL" then return base end
    -- an operand the rule names twice (both branches of an if) is one operand
    local key = base .. "|" .. how
    if slots[key] then return slots[key] end
    local c = formats or e.chain(t)
    local rec = e.record(t, what, how, c)
    if #c == 1 and c[1] == compute then
      slots[key] = base
      return base
    end
    local S, V = rec.storage, rec.view
    local n = e.numel(t)
    local name = string.format("w%d_%d", e.node and e.node.index or 0, wide_used)
    declare(name, string.format("    real *%s = m->wide + %d;", name, wide_used), true)
    wide_used = wide_used + (rec.count + 15) // 16 * 16
    if wide_used > wide_max then wide_max = wide_used end
    slots[key] = name
    if how == "load" or how == "update" then
      pre[#pre + 1] = string.format("k_load_%s_as_%s(%s, %s, %s);", S, V, name, base, n)
    end
    if how == "accum" then
      pre[#pre + 1] = string.format("memset(%s, 0, sizeof(real) * (size_t)(%s));", name, n)
      post[#post + 1] = string.format("k_accum_%s_from_%s(%s, %s, %s);", S, V, base, name, n)
      -- (e.acc may have the kernel store into the fresh buffer: no memset; and the
      -- gradient's first writer store it: k_store)
      accums[base] = { pre = #pre, post = #post, store = string.format("k_store_%s_from_%s(%s, %s, %s);", S, V, base, name, n) }
    elseif how == "store" or how == "update" then
      post[#post + 1] = string.format("k_store_%s_from_%s(%s, %s, %s);", S, V, base, name, n)
    end
    return name
  end

  -- Operands a kernel takes in their 16-bit storage itself (a kernel instantiated over
  -- that storage, e.g. templates/cpu/kernels_chain.inc's _bf16): no widening arena around
  -- it.  e.can_native(t, fmt): t is stored in fmt and read as fmt (no value changes on
  -- the way), so such a kernel computes what the float kernel over widened operands
  -- computes.  A rule that finds every operand so calls e.native(t) / e.native_grad(t)
  -- (the storage, typed in its format; recorded as the plan's "native" operands) and
  -- e.call_native(fmt, kernel, ...) (k_<kernel>_<fmt>); e.acc then says whether that
  -- kernel stores a gradient (its first writer) or adds it into the storage.
  function e.can_native(t, fmt)
    local c = e.chain(t)
    return c[1] == fmt and (c[2] or fmt) == fmt
  end
  function e.native(t)
    local base = storage(t)
    local writes = e.phase == "forward" and e.node and t == e.out
    e.record(t, "value", writes and "store" or "load").native = true
    return base
  end
  function e.native_grad(t)
    local base = grad_storage(t)
    if base == "NULL" then return base end
    local reads = e.node and t == e.out
    e.record(t, "grad", reads and "load" or "accum").native = true
    if not reads then natives[base] = true end
    return base
  end
  function e.call_native(fmt, kernel, ...) return kernel_call(kernel, fmt, ...) end

  function e.wrap(lines)
    if #pre == 0 and #post == 0 then return lines end
    local out = { "// operands converted between their storage and float around the kernel (precision plan)" }
    for _, x in ipairs(pre) do if x then out[#out + 1] = x end end
    for _, x in ipairs(lines) do out[#out + 1] = x end
    for _, x in ipairs(post) do out[#out + 1] = x end
    return out
  end
  function e.wide_size() return wide_max end

  function e.ptr(t)
    local base = storage(t)
    if t.dtype ~= "float" then return base end
    local writes = e.phase == "forward" and e.node and t == e.out
    return widened(t, base, writes and "store" or "load", "value")
  end
  function e.grad(t)
    local base = grad_storage(t)
    if base == "NULL" then return base end
    local reads = e.node and t == e.out
    return widened(t, base, reads and "load" or "accum", "grad")
  end
  -- whether the op's kernel adds into t's gradient ("1") or stores it ("0"): it stores
  -- where the op is the gradient's first writer (gen/plan.lua's first), writes it once
  -- and in the compute type (a converted operand is summed into its storage after the
  -- kernel).  A first writer that does not store zeroes the gradient before it (walk).
  --
  -- A gradient converted around the kernel (16-bit storage: widened's "accum") that the
  -- op writes once: the kernel stores into the fresh float buffer (no memset), which is
  -- summed into the storage after it, or stored there by the gradient's first writer.
  e.stored = {}
  local function writes_once(t)
    local r, count = l.root(t), 0
    for k, x in ipairs(e.node.inputs) do
      if l.root(x) == r and l.autodiff.grad_inputs[e.node] and l.autodiff.grad_inputs[e.node][k] then count = count + 1 end
    end
    return count == 1
  end
  local function converted(t)   -- widened's accum record of t's gradient, if the op writes it once
    local a = e.node and accums[grad_storage(t)]
    return a and writes_once(t) and a or nil
  end
  function e.acc(t)
    local r = l.root(t)
    local first = e.node and l.plan.first and l.plan.first[e.node]
    if natives[grad_storage(t)] then   -- a native 16-bit gradient: stored by its first writer
      if first and first[r] == 1 then
        e.stored[r] = true
        return "0"
      end
      return "1"
    end
    local c = e.chain(t)
    if first and first[r] == 1 and #c == 1 and c[1] == compute then
      e.stored[r] = true
      return "0"
    end
    local a = converted(t)
    if a then
      pre[a.pre] = false
      if first and first[r] == 1 then
        post[a.post] = a.store
        e.stored[r] = true
      end
      return "0"
    end
    return "1"
  end
  -- the same for the parameter gradients of `ts` (one flag: the kernel's pacc): where
  -- the op is each one's first writer (gen/plan.lua's param_first), writes it once, whole
  -- (not through a slice) and in the compute type, the flag is the backward's gadd: 0
  -- (store) on the first backward after model_zero_grad, which then leaves them as they
  -- are; 1 (add) on a later one (accumulation's micro-batches).  FULL_SHARD's units
  -- have their own clearing (runtime/ddp.c).
  -- Converted gradients (16 bits) all: the kernel stores into the fresh buffers ("0"),
  -- which the first writer stores into the gradients when gadd is 0.
  e.stored_params = {}
  local function whole(t)   -- t is all of its root (a cast or a transpose, not a slice)
    local function n(x) local k = 1 for _, d in ipairs(x.shape) do k = k * d end return k end
    return n(t) == n(l.root(t))
  end
  function e.acc_params(ts)
    local s = l.strategy
    local first = e.node and l.plan.param_first and l.plan.param_first[e.node]
    if s and s.sharding == "FULL_SHARD" then first = nil end
    local direct, wide = {}, {}
    for _, t in pairs(ts) do
      if e.grad_place(t) then
        local r, c = l.root(t), e.chain(t)
        if #c == 1 and c[1] == compute then direct[#direct + 1] = t
        elseif r.param and whole(t) and converted(t) then wide[#wide + 1] = t
        else return "1" end
      end
    end
    local gadd = function()
      return declare("gadd", "    const int gadd = !m->grads_zeroed;   // parameter gradients: 0 stores them (the first backward after model_zero_grad)")
    end
    if #wide > 0 and #direct == 0 then
      for _, t in ipairs(wide) do
        local a, r = converted(t), l.root(t)
        pre[a.pre] = false
        if first and first[r] == 1 then
          post[a.post] = string.format("if (%s) %s else %s", gadd(), post[a.post], a.store)
          e.stored_params[r.param] = true
        end
      end
      return "0"
    end
    if #wide > 0 or #direct == 0 or not first then return "1" end
    for _, t in ipairs(direct) do
      local r = l.root(t)
      if not (r.param and whole(t) and first[r] == 1) then return "1" end
    end
    for _, t in ipairs(direct) do e.stored_params[l.root(t).param] = true end
    return gadd()
  end
  function e.save(node, name)
    local s = e.save_place(node, name)
    -- (none: the CUDA plan's fused attention keeps its lse, not att; the CUDA program
    -- walks these kernels only for precision_plan.tsv's operands)
    if not s then return "NULL" end
    local var = string.format("s%d_%s", node.index, name)
    if s.arena == "ints" then
      return declare(var, string.format("    int32_t *%s = m->ints + %d;", var, s.offset))
    end
    return declare(var, string.format("    real *%s = (real *)(m->acts + %d);", var, s.offset))
  end
  function e.state(node, name)
    local s, full = e.state_entry(node, name)
    if not s then return "NULL" end
    local var = "b_" .. cname(full)
    local state = l.pp.settings.state
    if state == compute then
      return declare(var, string.format("    %sreal *%s = m->buffers + %d;   // %s", weights, var, s.offset, util.c_comment(full)))
    end
    declare(var, string.format("    %s%s *%s = m->buffers + %d;   // %s", weights, FORMATS[state].ctype, var, s.offset, util.c_comment(full)))
    -- a running statistic in 16 bits: widened for the op, rounded back after it (in a
    -- training program, whose training step updates it; an inference program only reads it)
    return widened({ shape = s.entry.shape, dtype = "float" }, var, l.inference and "load" or "update", "buffer " .. full, { state })
  end
  function e.call(kernel, ...) return kernel_call(kernel, ty.sfx, ...) end
  -- SyncBatchNorm (e.synced: gen/operands.lua): the line that sums n doubles over the
  -- ranks (runtime/ddp.h)
  function e.ranks_sum(buf, n)
    declare("ddp_sum", "    void ddp_sum(double *x, int n);   // runtime/ddp.h (SyncBatchNorm)")
    return string.format("ddp_sum(%s, %d);", buf, n)
  end
  function e.local_name(node, what) return string.format("%s%d", what, node.index) end
  function e.scratch() return "m->scratch" end
  -- the step's `training` flag (e.uses_training: some op behaves differently in training)
  function e.training() e.uses_training = true; return "training" end
  function e.training_only(expr) return e.training() .. " ? " .. expr .. " : NULL" end
  function e.rng_stream(node) return string.format("(m->step << 20 | %du)", node.index) end
  return e
end

-- detect_anomaly (fabric { detect_anomaly = true } or loom build --detect-anomaly): after
-- an op, the lines that check what it made (its output in the forward; the gradients it
-- added to in the backward) for NaN/Inf, with its inputs' statistics for the message
-- (templates/cpu/anomaly.h).  Each tensor is scanned whole in its root's storage.
local ANOMALY_FMT = { f32 = "ANOMALY_F32", f64 = "ANOMALY_F64", bf16 = "ANOMALY_BF16", f16 = "ANOMALY_F16" }
local function anomaly_lines(l, e, node, phase)
  local g = l.graph
  local compute = l.pp.settings.compute
  local function label(t, k)
    local r = l.root(t)
    if r.param then return "input " .. r.param end
    if r.input then return "input batch." .. r.input end
    return string.format("%s %s", k and ("input " .. k) or "its output", util.shape_str(t.shape))
  end
  local function operand(name, ptr, pl)
    return string.format("{ %s, %s, %s, %s }", util.c_string(name), ptr, ANOMALY_FMT[pl.fmt or compute], e.numel(pl.root))
  end
  local made, inputs, seen = {}, {}, {}
  for k, x in ipairs(node.inputs) do
    if x.dtype == "float" then
      inputs[#inputs + 1] = operand(label(x, k), e.raw(x), e.place(x))
      if phase == "backward" and not seen[l.root(x)] and e.grad_place(x) then
        seen[l.root(x)] = true
        made[#made + 1] = operand("the gradient of " .. label(x, k), e.raw_grad(x), e.grad_place(x))
      end
    end
  end
  if phase == "forward" then
    if node.out.dtype ~= "float" then return {} end
    made[1] = operand(label(node.out), e.raw(node.out), e.place(node.out))
  elseif e.grad_place(node.out) then
    table.insert(inputs, 1, operand("the gradient of its output", e.raw_grad(node.out), e.grad_place(node.out)))
  end
  if #made == 0 then return {} end
  local op = node.op
  if node.module and node.module.forward then
    op = string.format("%s (%s %s)", node.op, (g.prefix_of[node.module] or ""):gsub("%.$", ""), node.module.call_text)
  end
  local where = string.format("%s:%d", node.where.file, node.where.line)
  local lines = { "{   // detect_anomaly" }
  lines[#lines + 1] = "    const anomaly_tensor made[] = { " .. table.concat(made, ", ") .. " };"
  lines[#lines + 1] = "    const anomaly_tensor inputs[] = { " .. table.concat(inputs, ", ") .. " };"
  lines[#lines + 1] = string.format("    anomaly_check(%s, %s, %s, m->step, made, %d, inputs, %d);", util.c_string(phase),
    util.c_string(op), util.c_string(where), #made, #inputs)
  lines[#lines + 1] = "}"
  return lines
end
kernels_c.anomaly_lines = anomaly_lines   -- (a training_step's ops: gen/user_step.lua)

kernels_c.context = context   -- (gen/user_step.lua's functions of a training_step)

-- the C program's chain node is in (gen/fuse.lua's chains: its head's rules, ops_cpu's
-- chain_forward/chain_backward, run the whole chain), or nil (the CUDA plan's groups
-- are not the C kernels')
function kernels_c.chain_of(l, node)
  local g = l.fuse and l.fuse.group_of[node]
  return g and g.kind == "chain" and g or nil
end

-- Before a backward op, the gradients it writes first but does not store (its kernel
-- adds, or writes it twice, or through a conversion): zeroed there, for a batch of B
-- (gen/plan.lua's reuse: the slot held another gradient before).
local function first_zero(l, e, node, lines)
  local first = l.plan.first and l.plan.first[node]
  if not first then return lines end
  local zero, seen = {}, {}
  local function add(t)
    local r = l.root(t)
    if first[r] and not seen[r] and not e.stored[r] then
      seen[r] = true
      local pl = e.grad_place(r)
      zero[#zero + 1] = string.format("memset(%s, 0, %d * (size_t)(%s));", e.raw_grad(r),
        FORMATS[pl.fmt or l.pp.settings.compute].bytes, e.numel(r))
    end
  end
  for _, x in ipairs(node.inputs) do add(x) end
  local chain = kernels_c.chain_of(l, node)
  add(chain and chain.members[#chain.members].out or node.out)
  if #zero == 0 then return lines end
  table.insert(zero, 1, "// the gradients this op writes first, cleared (it adds into them)")
  for _, x in ipairs(lines) do zero[#zero + 1] = x end
  return zero
end

-- The training step's kernel calls for `l`, in the order the C program makes them.
-- Returns
--   forward    { { node, lines } }: every op of the trace but the folded casts (lines:
--              its calls with their conversions; nil for a view, which has none)
--   loss       the loss's pointer after the forward
--   backward   { { node, lines } }: the backward's ops but views and folded casts
--   dloss      the loss's gradient pointer
--   metrics    { pred, target } (the loss's inputs, read by the accuracy) or nil
--   user_metrics  { { name, reduce, ptr } }: train.log's metrics (eu: their context)
--   prediction the loss's first input's storage (epred: its context), for model_prediction
--   ef, eb, em the forward's, backward's and metrics' contexts (their declarations,
--              what they used, their share of m->wide)
--   operands   the three contexts' operand records (the precision plan's conversions)
--   num_wide   elements of m->wide: the most any op's conversions take
-- For an inference program (l.inference): forward, outputs ({ tensor, lines }: the
-- copy of each output into out0, out1, ...), ef, operands and num_wide only.
function kernels_c.walk(l)
  local ty = kernels_c.TYPES[l.settings.compute]
  local pp, trace = l.pp, l.trace
  local out = { forward = {}, backward = {} }

  local ef = context(l, ty)
  ef.grad = function() return "NULL" end
  for _, node in ipairs(trace.nodes) do
    if not pp.folded[node] then   -- a folded cast is a view, its conversion in a neighbour
      local lines
      local chain = kernels_c.chain_of(l, node)
      if chain and chain.head ~= node then
        lines = { string.format("// in %s's kernel (one pass with it)", chain.head.op) }
      elseif chain then
        ef.begin(node, "forward", chain.members[#chain.members].out)
        lines = ef.wrap(ops_cpu[node.op].chain_forward(ef, node, chain.members))
      elseif not ops[node.op].alias then
        ef.begin(node, "forward")
        lines = ef.wrap(ops_cpu[node.op].forward(ef, node))
        if l.options.detect_anomaly then
          for _, x in ipairs(anomaly_lines(l, ef, node, "forward")) do lines[#lines + 1] = x end
        end
      end
      out.forward[#out.forward + 1] = { node = node, lines = lines }
    end
  end
  if l.inference then
    -- an inference program (loom export): no loss, backward or metrics; the forward's
    -- outputs, each with the lines that copy it (in float) into the caller's array
    out.outputs = {}
    for i = 1, trace.outputs.n do
      local t = trace.outputs[i]
      ef.begin(nil, "result")
      local src = ef.ptr(t)
      out.outputs[i] = { tensor = t, lines = ef.wrap({ string.format("memcpy(out%d, %s, sizeof(real) * (size_t)(%s));", i - 1, src, ef.numel(t)) }) }
    end
    out.ef, out.operands = ef, { ef.operands }
    out.num_wide = math.max(1, ef.wide_size())
    return out
  end
  local loss = trace.outputs[1]
  ef.begin(nil, "result")
  out.loss = ef.ptr(loss)

  local eb = context(l, ty)
  for _, node in ipairs(l.autodiff.backward) do
    local chain = kernels_c.chain_of(l, node)
    if chain and chain.head ~= node then
      out.backward[#out.backward + 1] = { node = node, lines = { string.format("// in %s's backward kernel", chain.head.op) } }
    elseif not (ops[node.op].alias or pp.folded[node]) then
      eb.begin(node, "backward", chain and chain.members[#chain.members].out)
      eb.stored = {}
      local lines = eb.wrap(chain and ops_cpu[node.op].chain_backward(eb, node, chain.members)
                            or ops_cpu[node.op].backward(eb, node))
      lines = first_zero(l, eb, node, lines)
      if l.options.detect_anomaly then
        for _, x in ipairs(anomaly_lines(l, eb, node, "backward")) do lines[#lines + 1] = x end
      end
      out.backward[#out.backward + 1] = { node = node, lines = lines }
    end
  end
  eb.begin(nil, "result")
  out.dloss = eb.grad(loss)

  -- the model's prediction (the loss's first input) as stored: model_prediction()
  local epred = context(l, ty, true)
  epred.begin(nil, "prediction")
  out.prediction = epred.raw(loss.node.inputs[1])
  out.epred = epred

  local em = context(l, ty, true)
  em.begin(nil, "metrics")
  if l.accuracy then
    local x, t = loss.node.inputs[1], loss.node.inputs[2]
    local pred = em.ptr(x)
    out.metrics = { pred = pred, target = em.ptr(t) }
  end
  -- train.log's metrics (computed by the forward, after the loss): each one's pointer
  local eu = context(l, ty, true)
  eu.begin(nil, "user_metrics")
  out.user_metrics = {}
  for i, mt in ipairs(trace.metrics or {}) do out.user_metrics[i] = { name = mt.name, reduce = mt.reduce, ptr = eu.ptr(mt.tensor) } end
  out.ef, out.eb, out.em, out.eu = ef, eb, em, eu
  out.operands = { ef.operands, eb.operands, em.operands, eu.operands }
  out.num_wide = math.max(1, ef.wide_size(), eb.wide_size(), em.wide_size(), eu.wide_size())
  return out
end

-- What the report shows of a walk: { operands = { forward's, backward's }, num_wide =
-- elements of m->wide }
function kernels_c.counted(walked)
  return { operands = { walked.operands[1], walked.operands[2] }, num_wide = walked.num_wide }
end

-- The lines that clear the activation gradients before a backward: only the part of
-- each slot a batch of B uses (a slot holds batch_max samples; zeroing the whole arena
-- every step cost as much as some of the backward's ops at small B).  Slots lie in
-- order, so a run of per-batch-fixed slots and the batched one after it are one memset.
function kernels_c.dact_zero_lines(p)
  local slots = {}
  for _, g in pairs(p.grads) do if g.offset then slots[#slots + 1] = g end end
  table.sort(slots, function(a, b) return a.offset < b.offset end)
  local runs = {}
  for _, g in ipairs(slots) do
    local bytes = g.numel * FORMATS[g.fmt].bytes
    local fixed, per = bytes, 0
    if g.batched then fixed, per = 0, bytes // p.batch_max end
    local last = runs[#runs]
    if last and last.per == 0 then   -- slots are back to back: extend the run
      last.fixed, last.per = g.offset - last.off + fixed, per
    else
      runs[#runs + 1] = { off = g.offset, fixed = fixed, per = per }
    end
  end
  if #runs == 0 then return "    // no activation gradients" end
  local rows = {}
  for _, r in ipairs(runs) do rows[#rows + 1] = string.format("{%d, %d, %d}", r.off, r.fixed, r.per) end
  return table.concat({
    "    // the activation gradients a batch of B uses: offset, fixed bytes, bytes per sample",
    "    static const size_t dact_runs[][3] = { " .. table.concat(rows, ", ") .. " };",
    "    for (size_t i = 0; i < sizeof dact_runs / sizeof dact_runs[0]; i++)",
    "        memset(m->dacts + dact_runs[i][0], 0, dact_runs[i][1] + (size_t)B * dact_runs[i][2]);" }, "\n")
end

-- The scratch each op needs, as lines of model.c's model_scratch (some depend on the
-- thread count)
function kernels_c.scratch_lines(l)
  local es = context(l, kernels_c.TYPES[l.settings.compute])
  local sl = {}
  for _, node in ipairs(l.trace.nodes) do
    local scratch = ops_cpu[node.op].scratch
    if scratch then sl[#sl + 1] = "    " .. scratch(es, node) end
  end
  return sl
end

-- precision_plan.tsv: the precision plan and the C kernels' operand conversions
function kernels_c.precision_plan(l, walked)
  return require("precision").plan_tsv(l.pp, (walked or kernels_c.walk(l)).operands, l.root)
end

return kernels_c
