-- emit_c: the C backend.  Writes model.h / model.c (state layout, forward,
-- backward, initialisation) from templates/c/, with every size a constant and
-- every op preceded by the spec line it came from.  Loops and decisions live
-- here; the templates hold only named holes.
local util = require "util"
local diag = require "diag"
local ops_cpu = require "ops_cpu"
local template = require "template"
local ops = require "ops"
local plan_mod = require "plan"

local emit = {}

-- Runtime and kernel files copied next to every generated C program.
local RUNTIME_PREFIXES = { "runtime/", "templates/cpu/" }
-- the CUDA backend's runtime files (gen/emit_cuda.lua copies them), not the C program's
local CUDA_ONLY = { ["runtime/nvrtc_cache.c"] = true, ["runtime/nvrtc_cache.h"] = true,
                    ["runtime/loom_cuda.cu"] = true, ["runtime/loom_cuda.h"] = true }

local TYPES = {
  f32 = { ctype = "float", sfx = "f32", lit_suffix = "f" },
  f64 = { ctype = "double", sfx = "f64", lit_suffix = "" },
}

local cname = util.c_ident
emit.cname = cname

local literal = util.c_float

-- A C expression for the product of `shape`'s dims from..to, with B symbolic.
local count_expr = util.count_expr

-- The emitter context handed to the rules in gen/ops_cpu.lua (see there).
-- `read_only`: declare pointers const (a function that takes a const Model).
--
-- Every operand goes through the precision plan `pp`: a tensor is stored in its
-- root's format and read as its own (gen/precision.lua's chain).  Where that is
-- the compute type, the kernel gets the buffer itself.  Otherwise the operand is
-- converted into the widening arena (m->wide) around the op: loaded before it
-- (inputs), stored after it (outputs), or, for gradients the op adds into, summed
-- into the tensor's format after it.  e.begin(node, phase) starts an op and
-- e.wrap(lines) puts the conversions around its kernel calls.
local FORMATS = require("precision").FORMATS

local function context(g, st, p, pp, ty, ad, read_only)
  local precision = require "precision"
  -- operands: every float operand of a kernel, once per op (those not in the compute
  -- type go through m->wide: the program's conversions)
  local e = { T = ty.ctype, sfx = ty.sfx, decls = {}, declared = {}, operands = {} }
  local compute = pp.settings.compute
  local wide_used, wide_max = 0, 0
  local pre, post, slots = {}, {}, {}
  local phase, cur_node = "forward", nil
  local function declare(name, line, writable)
    if not e.declared[name] then
      e.declared[name] = true
      if read_only and not writable then line = line:gsub("^    real %*", "    const real *") end
      e.decls[#e.decls + 1] = line
    end
    return name
  end
  -- the next tensor toward the storage: a view's input, a folded cast's other end
  local function next_of(t)
    local a = p.acts[t]
    if a and a.source then return a.source end
    return nil
  end
  local function root(t)
    local n = 0
    while next_of(t) do t = next_of(t); n = n + 1; assert(n < 10000) end
    return t
  end
  -- formats from storage to t: { storage } or { storage, view }
  local function chain(t) return precision.chain(pp, t, next_of) end
  e.chain, e.root = chain, root
  function e.fmt(t) return pp.fmt[t] end

  -- the storage of a tensor (its root), typed in its format
  local function storage(t)
    t = root(t)
    local f = pp.fmt[t] or compute
    local ct = f == compute and "real" or FORMATS[f].ctype
    if t.param then
      local s = st.by_name[t.param]
      return declare("p_" .. cname(t.param), string.format("    %s *p_%s = m->params + %d;   // %s %s",
        ct, cname(t.param), s.offset, util.c_comment(t.param), util.shape_str(t.shape)))
    end
    if t.input then
      local c = t.dtype == "int64" and "int64_t" or "real"
      e.uses_batch = true
      return declare("in_" .. cname(t.input), string.format("    const %s *in_%s = batch->%s;   // %s", c,
        cname(t.input), cname(t.input), util.shape_str(t.shape)))
    end
    local a = p.acts[t]
    return declare("a" .. t.id, string.format("    %s *a%d = (%s *)(m->acts + %d);   // %s%s", ct, t.id, ct, a.offset,
      util.shape_str(t.shape), f ~= compute and (" " .. f) or ""))
  end
  local function grad_storage(t)
    t = root(t)
    local f = pp.fmt[t] or compute
    local ct = f == compute and "real" or FORMATS[f].ctype
    if t.param then
      local s = st.by_name[t.param]
      return declare("g_" .. cname(t.param), string.format("    %s *g_%s = m->grads + %d;", ct, cname(t.param), s.offset))
    end
    local gr = p.grads[t]
    if not gr or not ad or not ad.needs_grad[t] then return "NULL" end
    return declare("d" .. t.id, string.format("    %s *d%d = (%s *)(m->dacts + %d);   // grad of a%d", ct, t.id, ct, gr.offset, t.id))
  end
  e.raw, e.raw_grad = storage, grad_storage

  -- a float operand in the widening arena; how = "load", "store", "accum", "update";
  -- `formats`: the chain when t is not in the plan (a module buffer)
  local function widened(t, base, how, what, formats)
    if base == "NULL" then return base end
    -- an operand the rule names twice (both branches of an if) is one operand
    local key = base .. "|" .. how
    if slots[key] then return slots[key] end
    local c = formats or chain(t)
    local per, batched = plan_mod.sizes(t.shape)
    local cap = batched and per * p.batch_max or per
    e.operands[#e.operands + 1] = { node = cur_node, phase = phase, tensor = t, what = what, storage = c[1],
                                    view = c[2] or c[1], how = how, count = cap }
    if #c == 1 and c[1] == compute then
      slots[key] = base
      return base
    end
    local S, V = c[1], c[2] or c[1]
    local n = e.numel(t)
    local name = string.format("w%d_%d", cur_node and cur_node.index or 0, wide_used)
    declare(name, string.format("    real *%s = m->wide + %d;", name, wide_used), true)
    wide_used = wide_used + (cap + 15) // 16 * 16
    if wide_used > wide_max then wide_max = wide_used end
    slots[key] = name
    if how == "load" or how == "update" then
      pre[#pre + 1] = string.format("k_load_%s_as_%s(%s, %s, %s);", S, V, name, base, n)
    end
    if how == "accum" then
      pre[#pre + 1] = string.format("memset(%s, 0, sizeof(real) * (size_t)(%s));", name, n)
      post[#post + 1] = string.format("k_accum_%s_from_%s(%s, %s, %s);", S, V, base, name, n)
    elseif how == "store" or how == "update" then
      post[#post + 1] = string.format("k_store_%s_from_%s(%s, %s, %s);", S, V, base, name, n)
    end
    return name
  end

  function e.begin(node, ph)
    cur_node, phase = node, ph
    pre, post, slots, wide_used = {}, {}, {}, 0
  end
  function e.wrap(lines)
    if #pre == 0 and #post == 0 then return lines end
    local out = { "// operands converted between their storage and float around the kernel (precision plan)" }
    for _, l in ipairs(pre) do out[#out + 1] = l end
    for _, l in ipairs(lines) do out[#out + 1] = l end
    for _, l in ipairs(post) do out[#out + 1] = l end
    return out
  end
  function e.wide_size() return wide_max end

  function e.ptr(t)
    local base = storage(t)
    if t.dtype ~= "float" then return base end
    local writes = phase == "forward" and cur_node and t == cur_node.out
    return widened(t, base, writes and "store" or "load", "value")
  end
  function e.grad(t)
    local base = grad_storage(t)
    if base == "NULL" then return base end
    local reads = cur_node and t == cur_node.out
    return widened(t, base, reads and "load" or "accum", "grad")
  end
  function e.save(node, name)
    local s = p.saves[node][name]
    local var = string.format("s%d_%s", node.index, name)
    if s.arena == "ints" then
      return declare(var, string.format("    int32_t *%s = m->ints + %d;", var, s.offset))
    end
    return declare(var, string.format("    real *%s = (real *)(m->acts + %d);", var, s.offset))
  end
  function e.state(node, name)
    local full = (g.prefix_of[node.module] or "") .. name
    local s = st.by_name[full]
    if not s then return "NULL" end
    local var = "b_" .. cname(full)
    if pp.settings.state == compute then
      return declare(var, string.format("    real *%s = m->buffers + %d;   // %s", var, s.offset, util.c_comment(full)))
    end
    declare(var, string.format("    %s *%s = m->buffers + %d;   // %s", FORMATS[pp.settings.state].ctype, var, s.offset, util.c_comment(full)))
    -- a running statistic in 16 bits: widened for the op, rounded back after it
    return widened({ shape = s.entry.shape, dtype = "float" }, var, "update", "buffer " .. full, { pp.settings.state })
  end
  function e.counter(node, name)
    local full = (g.prefix_of[node.module] or "") .. name
    local s = st.by_name[full]
    if not s then return "NULL" end
    return string.format("&m->counters[%d]", s.offset)
  end
  -- sizes; e.uses_B: some size named the batch size B (else the function says (void)B)
  local function sized(shape, from, to)
    for i = from or 1, to or #shape do
      if shape[i] == "B" then e.uses_B = true end
    end
    return count_expr(shape, from, to)
  end
  function e.numel(t) return sized(t.shape) end
  function e.rows(t, k) return sized(t.shape, 1, #t.shape - k) end
  function e.outer(t, before) return sized(t.shape, 1, before - 1) end
  function e.batch(t) return sized(t.shape, 1, 1) end
  function e.lit(v) return literal(v, ty.lit_suffix) end
  function e.call(kernel, ...)
    local args = table.pack(...)
    for i = 1, args.n do args[i] = tostring(args[i]) end
    return string.format("k_%s_%s(%s);", kernel, ty.sfx, table.concat(args, ", ", 1, args.n))
  end
  function e.local_name(node, what) return string.format("%s%d", what, node.index) end
  function e.scratch() return "m->scratch" end
  -- the step's `training` flag (e.uses_training: some op behaves differently in training)
  function e.training() e.uses_training = true; return "training" end
  function e.training_only(expr) return e.training() .. " ? " .. expr .. " : NULL" end
  function e.rng_stream(node) return string.format("(m->step << 20 | %du)", node.index) end
  return e
end

-- "// img_input.1  <- specs/paw.lua:7  Conv2d(3, 16, 3, {padding = \"same\"})", then `suffix`
local function node_comment(g, node, suffix)
  suffix = suffix or ""
  if node.op == "cast" then
    return string.format("    // cast %s -> %s  <- %s:%d%s", node.attrs.from, node.attrs.to, util.c_comment(node.where.file), node.where.line, suffix)
  end
  if node.module and node.module.forward then
    local label = (g.prefix_of[node.module] or ""):gsub("%.$", "")
    return string.format("    // %s  <- %s:%d  %s%s", util.c_comment(label), util.c_comment(node.where.file), node.where.line, node.module.call_text, suffix)
  end
  return string.format("    // %s  <- %s:%d%s", node.op, util.c_comment(node.where.file), node.where.line, suffix)
end
emit.node_comment = node_comment

local function shapes_comment(node)
  local ins = {}
  for _, x in ipairs(node.inputs) do
    if not x.param then ins[#ins + 1] = util.shape_str(x.shape) end
  end
  if #ins == 0 then   -- an op of parameters only (a kept cast of a weight)
    for _, x in ipairs(node.inputs) do ins[#ins + 1] = util.shape_str(x.shape) end
  end
  return string.format("    // %s -> %s", table.concat(ins, ", "), util.shape_str(node.out.shape))
end

local function indent(lines, pre)
  local out = {}
  for i, l in ipairs(lines) do out[i] = (pre or "    ") .. l end
  return out
end
emit.indent = indent

local function check_supported(trace)
  for _, node in ipairs(trace.nodes) do
    if not ops_cpu[node.op] then
      diag.error(node.where, string.format("%s is not supported by the C backend yet", node.op))
    end
  end
  diag.check()
end

local function tensor_info_rows(list)
  local rows = {}
  for _, s in ipairs(list) do
    local shape = {}
    for i, d in ipairs(s.entry.shape) do shape[i] = tostring(d) end
    rows[#rows + 1] = string.format("    {%s, %d, %d, %d, {%s}},", util.c_string(s.name), s.offset, s.numel, #s.entry.shape,
      #shape > 0 and table.concat(shape, ", ") or "0")
  end
  if #rows == 0 then rows[1] = "    {\"\", 0, 0, 0, {0}}," end
  return table.concat(rows, "\n")
end
emit.tensor_info_rows = tensor_info_rows

-- PyTorch's default initialisation of the state `st` (also the CUDA program's, drawn
-- on the host with the same Philox streams)
local function init_lines(st)
  local lines = {}
  for i, s in ipairs(st.params) do
    local init = s.entry.init
    local ptr = string.format("m->params + %d", s.offset)
    local line
    if init.kind == "kaiming_uniform" or init.kind == "uniform_fan_in" then
      -- kaiming_uniform_(a=√5) and the bias rule both give U(-1/√fan_in, 1/√fan_in)
      line = string.format("init_uniform(%s, %d, %s, seed, %d);", ptr, s.numel, literal(1 / math.sqrt(init.fan_in), ""), i)
    elseif init.kind == "normal" then
      line = string.format("init_normal(%s, %d, seed, %d);", ptr, s.numel, i)
      if init.padding_idx then
        local row = s.entry.shape[2]
        line = line .. string.format("\n    memset(%s + %d, 0, sizeof(state_t) * %d);   // padding_idx row", ptr, init.padding_idx * row, row)
      end
    elseif init.kind == "ones" then
      line = string.format("init_fill(%s, %d, 1);", ptr, s.numel)
    else
      line = string.format("init_fill(%s, %d, 0);", ptr, s.numel)
    end
    lines[#lines + 1] = string.format("    %s   // %s", line, util.c_comment(s.name))
  end
  for _, s in ipairs(st.buffers) do
    local v = s.entry.init.kind == "ones" and 1 or 0
    lines[#lines + 1] = string.format("    init_fill(m->buffers + %d, %d, %d);   // %s", s.offset, s.numel, v, util.c_comment(s.name))
  end
  lines[#lines + 1] = "    memset(m->counters, 0, sizeof(int64_t) * NUM_COUNTERS);"
  return table.concat(lines, "\n")
end

emit.init_lines = init_lines

-- Accuracy from the loss's inputs: argmax for class indices, a 0.5 threshold
-- (0 on logits) for binary targets.
-- Accuracy over a batch on the host, for the loss `loss_node`: class indices by argmax,
-- binary targets by a 0.5 threshold (0 on logits).  `pred` and `target` are C
-- pointers already declared (pred of type `ctype`); returns the lines, or nil when
-- the loss has no accuracy.
local function accuracy_kind(loss_node)
  local acc = ops[loss_node.op].accuracy
  return acc and acc(loss_node) or nil
end

local function accuracy_lines(loss_node, pred, target, ctype, batch, numel)
  local x = loss_node.inputs[1]
  local kind = accuracy_kind(loss_node)
  if kind == "argmax" then
    local C = x.shape[2]
    local S = 1
    for i = 3, #x.shape do S = S * x.shape[i] end
    return {
      string.format("    const %s *logits = %s;   // %s", ctype, pred, util.shape_str(x.shape)),
      string.format("    const int64_t *target = %s;", target),
      "    int64_t right = 0, seen = 0;",
      string.format("    for (int n = 0; n < %s; n++) {", batch),
      string.format("        for (int s = 0; s < %d; s++) {", S),
      string.format("            int64_t y = target[n * %d + s];", S),
      string.format("            if (y == %d) continue;   // ignore_index", loss_node.attrs.ignore_index),
      "            int best = 0;",
      string.format("            for (int c = 1; c < %d; c++)", C),
      string.format("                if (logits[(n * %d + c) * %d + s] > logits[(n * %d + best) * %d + s]) best = c;", C, S, C, S),
      "            right += (best == y);",
      "            seen++;",
      "        }",
      "    }",
      "    *correct = right;",
      "    *count = seen;",
    }
  end
  if kind == "threshold" then
    local threshold = loss_node.op == "bce" and "0.5" or "0"
    return {
      string.format("    const %s *pred = %s;", ctype, pred),
      string.format("    const %s *target = %s;", ctype, target),
      "    int64_t right = 0;",
      string.format("    for (int64_t i = 0; i < (int64_t)(%s); i++) right += ((pred[i] > %s) == (target[i] > 0.5));", numel, threshold),
      "    *correct = right;",
      string.format("    *count = (int64_t)(%s);", numel),
    }
  end
  return nil
end
emit.accuracy_lines = accuracy_lines

local function metrics_body(e, loss_node)
  if not (loss_node and accuracy_kind(loss_node)) then return nil end
  local x, t = loss_node.inputs[1], loss_node.inputs[2]
  return table.concat(accuracy_lines(loss_node, e.ptr(x), e.ptr(t), "real", e.batch(x), e.numel(x)), "\n")
end

-- What this backend cannot run, said before any work: its precisions, a training step,
-- its ops.  (The pipeline's assign stage asks; gen/pipeline.lua.)
function emit.check(g, target)
  local sp = g.spec
  local precision = target.precision or sp.fabric.precision
  if not require("precision").SETTINGS[precision] then
    if target.precision then   -- from the command line, not the spec
      diag.fatal(nil, string.format("--precision=%s is not supported by the C backend", precision))
    end
    diag.fatal(sp.fabric.where, string.format("precision '%s' is not supported by the C backend", precision))
  end
  if not g.loss then
    diag.fatal(sp.model_where, "the spec has no train { ... } with a loss, so there is no training step to generate")
  end
  check_supported(g.loss)
end

-- Does this backend run every op of the training step?  (explain: the C plan or none)
function emit.runs(g)
  for _, node in ipairs(g.loss.nodes) do if not ops_cpu[node.op] then return false end end
  return true
end

-- The model's files (model.h, model.c, precision_plan.tsv) for the lowered table `l`
-- (gen/pipeline.lua).  Returns { [filename] = text } and what the operand contexts
-- counted: { operands = { forward's, backward's }, num_wide = elements of m->wide }.
function emit.model(l)
  local g, sp = l.graph, l.spec
  local precision = l.precision
  local prec = require "precision"
  local settings = l.settings
  local ty = TYPES[settings.compute]
  local batch_max = l.batch_max
  local pp, trace, ad, st, p = l.pp, l.trace, l.autodiff, l.state, l.plan
  local function skipped(node) return ops[node.op].alias or pp.folded[node] end

  -- forward
  local ef = context(g, st, p, pp, ty, nil)
  ef.grad = function() return "NULL" end
  local fwd = {}
  for _, node in ipairs(trace.nodes) do
    local rule = ops_cpu[node.op]
    if not pp.folded[node] then   -- a folded cast is a view, its conversion in a neighbour
      fwd[#fwd + 1] = ""
      fwd[#fwd + 1] = node_comment(g, node, node.op == "cast" and "  (kept as a kernel: REPORT.md, precision plan)" or "")
      fwd[#fwd + 1] = shapes_comment(node)
      if ops[node.op].alias then
        fwd[#fwd + 1] = string.format("    // (a view of its input: no copy)")
      else
        ef.begin(node, "forward")
        for _, l in ipairs(indent(ef.wrap(rule.forward(ef, node)))) do fwd[#fwd + 1] = l end
      end
    end
  end
  local loss = trace.outputs[1]
  ef.begin(nil, "result")
  local loss_ptr = ef.ptr(loss)
  if not ef.uses_training then table.insert(ef.decls, "    (void)training;   // no op of this model behaves differently in training") end

  -- backward
  local eb = context(g, st, p, pp, ty, ad)
  local bwd = {}
  for _, node in ipairs(ad.backward) do
    local rule = ops_cpu[node.op]
    if not skipped(node) then
      bwd[#bwd + 1] = ""
      bwd[#bwd + 1] = node_comment(g, node, "  (backward)")
      eb.begin(node, "backward")
      for _, l in ipairs(indent(eb.wrap(rule.backward(eb, node)))) do bwd[#bwd + 1] = l end
    end
  end
  eb.begin(nil, "result")
  local dloss_ptr = eb.grad(loss)
  if eb.uses_training then table.insert(eb.decls, "    const int training = 1;") end
  -- the backward's parameters it reads (the context records each use)
  if not eb.uses_batch then table.insert(eb.decls, "    (void)batch;") end
  if not eb.uses_B then table.insert(eb.decls, "    (void)B;") end

  -- metrics
  local em = context(g, st, p, pp, ty, nil, true)
  local loss_node = loss.node
  em.begin(nil, "metrics")
  local mbody = metrics_body(em, loss_node)
  if mbody then
    local lines = {}
    for _, l in ipairs(em.wrap({ false })) do lines[#lines + 1] = l and ("    " .. l) or mbody end
    mbody = table.concat(lines, "\n")
  end
  local has_accuracy = mbody ~= nil
  if not mbody then mbody = "    (void)m; (void)batch; (void)B;\n    *correct = 0;\n    *count = 0;"
  else
    mbody = table.concat(em.decls, "\n") .. "\n" .. mbody
    if not em.uses_batch then mbody = "    (void)batch;\n" .. mbody end
  end

  -- scratch: the largest any op needs (some depend on the thread count)
  local es = context(g, st, p, pp, ty, nil)
  local sl = {}
  for _, node in ipairs(trace.nodes) do
    local scratch = ops_cpu[node.op].scratch
    if scratch then sl[#sl + 1] = "    " .. scratch(es, node) end
  end
  local scratch_body = #sl > 0 and table.concat(sl, "\n") or "    // no op needs scratch space"

  -- the batch: every field of the data source
  local fields = l.fields
  local bfields, binfo, bswitch = {}, {}, {}
  for i, f in ipairs(fields) do
    local per = util.numel(f.shape)
    local ct = f.dtype == "int64" and "int64_t" or "real"
    bfields[#bfields + 1] = string.format("    %s *%s;   // (B%s)", ct, cname(f.name),
      #f.shape > 0 and (", " .. table.concat(f.shape, ", ")) or "")
    binfo[#binfo + 1] = string.format("    {%s, %d, %d, %d},", util.c_string(f.name), f.dtype == "int64" and 1 or 0, per, f.high)
    bswitch[#bswitch + 1] = string.format("    case %d: return b->%s;", i - 1, cname(f.name))
  end

  local loss_desc = string.format("%s", loss_node and loss_node.op or "loss")
  local values = {
    model_name = g.model_rec.class, spec_file = sp.file, precision = precision, ctype = ty.ctype,
    precision_summary = prec.summary(pp),
    state_ctype = settings.state == "bf16" and "uint16_t" or settings.state == "f16" and "_Float16"
      or prec.FORMATS[settings.state].ctype,
    state_format = settings.state, state_is_real = settings.state == settings.compute and 1 or 0,
    loss_scaling = settings.loss_scaling and 1 or 0,
    act_bytes = p.nacts, dact_bytes = p.ngrads,
    num_wide = math.max(1, ef.wide_size(), eb.wide_size(), em.wide_size()),
    spec_hash = l.spec_hash, batch_max = batch_max,
    num_params = st.nparams, num_buffers = st.nbuffers, num_counters = #st.counters,
    num_ints = p.nint,
    num_param_tensors = #st.params, num_buffer_tensors = #st.buffers, num_counter_tensors = #st.counters,
    batch_fields = table.concat(bfields, "\n"), num_batch_fields = #fields, loss_desc = loss_desc,
    has_accuracy = has_accuracy and 1 or 0,
  }
  local files = {}
  files["precision_plan.tsv"] = prec.plan_tsv(pp, { ef.operands, eb.operands, em.operands }, ef.root)
  files["model.h"] = template.fill("templates/c/model.h.in", values)
  files["model.c"] = template.fill("templates/c/model.c.in", {
    model_name = g.model_rec.class, spec_file = sp.file,
    param_info = tensor_info_rows(st.params), buffer_info = tensor_info_rows(st.buffers),
    counter_info = tensor_info_rows(st.counters),
    batch_info = table.concat(binfo, "\n"), batch_switch = table.concat(bswitch, "\n"),
    init_body = init_lines(st),
    forward_decls = table.concat(ef.decls, "\n"), forward_body = table.concat(fwd, "\n"), loss_ptr = loss_ptr,
    backward_decls = table.concat(eb.decls, "\n"), backward_body = table.concat(bwd, "\n"), dloss_ptr = dloss_ptr,
    metrics_body = mbody, scratch_body = scratch_body,
  })
  return files, { operands = { ef.operands, eb.operands }, num_wide = values.num_wide }
end

-- The CPU program's files for the lowered table `l`: the model's (emit.model), the
-- The C program's blocks of the training loop (templates/loop/train.c.in's @{holes}:
-- what differs from the CUDA program's, gen/emit_cuda.lua): the loop runs the model
-- and the optimizer (optim.c) on the host.
local TRAIN_BLOCKS = {
  header = [==[
// ${model_name}: the training program, generated by loom from ${spec_file}.
// One plain loop, top to bottom: load data → for each epoch, each batch:
// forward, loss, backward, (clip, step every ACCUMULATE micro-batches), log →
// validate → callbacks → checkpoint.  Regenerate rather than edit.
#include "model.h"
#include "optim.h"
]==],
  device_schedule = "",
  args_fields = "",
  usage = [==[
    fprintf(f, "usage: %s [--epochs N] [--max-steps N] [--seed N] [--resume CKPT] [--out DIR] [--data DIR] [--quiet]\n"
               "trains " MODEL_NAME " (generated by loom from %s)\n", "train", "${spec_file}");
]==],
  args_defaults = [==[
    Args a = { DEFAULT_EPOCHS, DEFAULT_MAX_STEPS, DEFAULT_SEED, NULL, "${default_out}", NULL, 0, 0 };
]==],
  args_parse = "",
  save_from_device = "",
  weights_to_device = "",
  state_to_device = "",
  eval_forward = [==[
        total += (double)model_forward(m, &batch, B, 0) * B;
]==],
  main_start = [==[
    Args args = parse_args(argc, argv);
]==],
  model_setup = [==[
    if (model_alloc(&m)) die("out of memory");
    model_init(&m, args.seed);
    Optimizer opt;
    if (optimizer_alloc(&opt)) die("out of memory");
]==],
  resume_steps = "",
  loop_vars = [==[
    int64_t micro = 0;${loop_vars}
]==],
  micro_batch = [==[
        while ((rc = loader_next(train_loader, &db, &err)) == DATA_OK) {
            bind_batch(&batch, &db, &train_ds);
            int B = (int)db.size;
            // forward and backward of one micro-batch; the loss is averaged over
            // the ACCUMULATE micro-batches of a step
            m.step = (uint64_t)(rs.step * ACCUMULATE + micro % ACCUMULATE);   // dropout's stream: one per micro-batch
            real loss = model_forward(&m, &batch, B, 1);
${backward}
            loss_sum += loss; loss_count++;
            rs.batch = db.index + 1;
            if (++micro % ACCUMULATE) continue;

${step_block}
            model_zero_grad(&m);
            rs.step++;

            double mean_loss = loss_sum / loss_count;
            epoch_loss_sum += mean_loss; epoch_loss_count++;
            loss_sum = 0; loss_count = 0;
            if (!args.quiet) progress_step(&prog, (int)rs.epoch, (db.index + 1) / ACCUMULATE - 1, mean_loss, (int64_t)B * ACCUMULATE);
${log_step}
            if (args.max_steps && rs.step >= args.max_steps) { stop = 1; break; }
            if (signals_stop_requested()) { stop = 2; break; }
]==],
  summary_extra = "",
}

-- training loop's (gen/emit_train.lua's values in templates/loop/), the runtime and kernels
-- it compiles with, and its build.ninja.  Returns { files = ..., counted = what
-- emit.model counted }.
function emit.program(l)
  local sp = l.spec
  local f = sp.fabric
  if f.float32_matmul_precision and f.float32_matmul_precision ~= "highest" then
    local w = diag.key_where(f.where, "float32_matmul_precision") or { file = sp.file, line = 1 }
    io.stderr:write(string.format("%s:%d: note: float32_matmul_precision '%s' is for the GPU's TF32; the CPU program computes float32 GEMMs in float32\n",
      w.file, w.line, f.float32_matmul_precision))
  end
  local files, counted = emit.model(l)
  local loop = require("emit_train").values(l)
  files["train.c"] = template.fill("templates/loop/train.c.in", loop.train, false, TRAIN_BLOCKS)
  files["optim.h"] = template.fill("templates/c/optim.h.in", loop.optim_h)
  files["optim.c"] = template.fill("templates/c/optim.c.in", loop.optim_c)
  for name, text in pairs(loop.files) do files[name] = text end   -- the user's hooks
  local loomc = require "loomc"
  for _, prefix in ipairs(RUNTIME_PREFIXES) do
    for _, path in ipairs(loomc.embedded_list(prefix)) do
      if not CUDA_ONLY[path] then files[path:match("([^/]+)$")] = template.source(path) end
    end
  end
  local objects, list = {}, {}
  for _, name in ipairs(util.sorted_keys(files)) do
    if name:match("%.c$") then
      local obj = "obj/" .. name:gsub("%.c$", ".o")
      objects[#objects + 1] = string.format("build %s: cc %s", obj, name)
      list[#list + 1] = obj
    end
  end
  files["build.ninja"] = template.fill("templates/c/build.ninja.in", {
    model_name = l.graph.model_rec.class, spec_file = sp.file,
    extra_cflags = l.options.extra_cflags, extra_ldflags = l.options.extra_ldflags,
    objects = table.concat(objects, "\n"), object_list = table.concat(list, " "),
  })
  return { files = files, counted = counted }
end

return emit
