-- emit_c: the C backend.  Writes model.h / model.c (state layout, forward,
-- backward, initialisation) from templates/c/, with every size a constant and
-- every op preceded by the spec line it came from.  Loops and decisions live
-- here; the templates hold only named holes.
local util = require "util"
local diag = require "diag"
local ops_cpu = require "ops_cpu"
local template = require "template"
local kernels_c = require "kernels_c"
local host_c = require "host_c"
local node_comment, indent, tensor_info_rows = host_c.node_comment, host_c.indent, host_c.tensor_info_rows
local init_lines, accuracy_lines = host_c.init_lines, host_c.accuracy_lines

local emit = {}

-- Runtime and kernel files copied next to every generated C program; the CPU kernels
-- include scalar_ops.h (the per-element functions they share with the CUDA kernels).
local RUNTIME_PREFIXES = { "runtime/", "templates/cpu/" }
emit.SHARED_KERNEL_FILES = { "templates/common/scalar_ops.h" }
-- the CUDA backend's runtime files (gen/emit_cuda.lua copies them), not the C program's
local CUDA_ONLY = { ["runtime/nvrtc_cache.c"] = true, ["runtime/nvrtc_cache.h"] = true,
                    ["runtime/loom_cuda.cu"] = true, ["runtime/loom_cuda.h"] = true,
                    ["runtime/ddp_nccl.c"] = true, ["runtime/ddp_nccl.h"] = true }
-- DDP's (runtime/collectives.h on MPI, runtime/ddp.h): only a program whose strategy has
-- several ranks carries and links them (a single-device program links no MPI)
local DDP_ONLY = { ["runtime/collectives.c"] = true, ["runtime/collectives.h"] = true,
                   ["runtime/ddp.c"] = true, ["runtime/ddp.h"] = true }

local shapes_comment = host_c.shapes_comment

local function check_supported(trace)
  for _, node in ipairs(trace.nodes) do
    if not ops_cpu[node.op] then
      diag.error(node.where, string.format("%s is not supported by the C backend yet", node.op))
    end
  end
  diag.check()
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
  emit.check_methods(g)
  if g.step then require("user_step").check(g, target, precision, "cpu") end
end

-- A declared method other than forward that the training step does not call and that is
-- no entry point (gen/entries.lua: sampling) has no place in a training program: refused, one line at its definition (never dropped
-- silently).  (gen/emit_cuda.lua's check asks too.)
function emit.check_methods(g)
  for _, name in ipairs(g.order) do
    local out = g.traces[name] and g.traces[name].outputs[1]
    local entry = require("tensor").is(out) and out.node and out.node.op == "autoregress"   -- gen/entries.lua's
    if name ~= "forward" and not g.called[name] and not entry then
      local fn = g.model_rec.methods[name]
      local info = type(fn) == "function" and debug.getinfo(fn, "S")
      local where = info and info.linedefined > 0 and { file = g.spec.file, line = info.linedefined } or g.model_rec.where
      diag.error(where, string.format("method '%s' cannot be generated: it is neither forward, nor called by the %s, "
        .. "nor an entry point returning autoregress(...) (sampling): call it from %s, or remove it", name,
        g.step and "training step" or "loss", g.step and "training_step" or "train.loss"))
    end
  end
  diag.check()
end

-- Does this backend run every op of the training step?  (explain: the C plan or none)
function emit.runs(g)
  for _, node in ipairs(g.loss.nodes) do if not ops_cpu[node.op] then return false end end
  return true
end

-- The forward's lines of a walk (gen/kernels_c.lua): each op after the spec line it
-- came from and its shapes (the training program's model.c and the exported library's)
function emit.forward_lines(g, w)
  local fwd = {}
  for _, op in ipairs(w.forward) do
    local node = op.node
    fwd[#fwd + 1] = ""
    fwd[#fwd + 1] = node_comment(g, node, node.op == "cast" and "  (kept as a kernel: REPORT.md, precision plan)" or "")
    fwd[#fwd + 1] = shapes_comment(node)
    if not op.lines then
      fwd[#fwd + 1] = string.format("    // (a view of its input: no copy)")
    else
      for _, x in ipairs(indent(op.lines)) do fwd[#fwd + 1] = x end
    end
  end
  return fwd
end

-- model.h's sampling declarations and model.c's decode step for the lowered table's
-- entry point (gen/entries.lua), or the macros that say there is none.  The exported
-- library's NAME_<method> (gen/emit_export.lua) runs the same decode step.
-- the program's entry point (both backends): the lowered table's, refused under FULL_SHARD
function emit.entry(l)
  local e = l.entries[1]
  if e and not e.refused and l.strategy and l.strategy.sharding == "FULL_SHARD" then
    e = { refused = "fsdp FULL_SHARD: each rank holds a shard of the parameters; sample from a checkpoint with a --devices=1 build (--resume CKPT --sample N)" }
  end
  return e
end

function emit.sample_code(l)
  local e = emit.entry(l)
  if not e or e.refused then return host_c.no_sample(e and e.refused) end
  local g, st = l.graph, l.state
  local decls, declared = {}, {}
  local s = host_c.step_context(e)
  -- a parameter the step reads in another format than its storage's (a 16-bit state,
  -- or rounded by a cast: autocast's bf16 weights) is read from a copy in the compute
  -- type after the token-dependent tensors, converted by model_sample_begin
  local compute, state_fmt = l.settings.compute, l.settings.state
  local copies, size = {}, e.size
  function s.param(t)
    local v = require("entries").param_view(t, e.producer, e.fmt)
    local f = v.fmt or state_fmt
    local copied = f ~= compute or state_fmt ~= compute
    local name = "p_" .. util.c_ident(v.param) .. (copied and ("_" .. f) or "")
    if not declared[name] then
      declared[name] = true
      local p = st.by_name[v.param]
      local shape = util.shape_str(g.param_by_name[v.param].shape)
      if copied then
        copies[#copies + 1] = string.format("    k_load_%s_as_%s(m->decode + %d, m->params + %d, %d);   // %s %s as %s",
          state_fmt, f, size, p.offset, p.numel, util.c_comment(v.param), shape, f)
        decls[#decls + 1] = string.format("    const real *%s = D + %d;   // %s %s, read as %s", name, size,
          util.c_comment(v.param), shape, f)
        size = size + (p.numel + 15) // 16 * 16
      else
        decls[#decls + 1] = string.format("    const real *%s = m->params + %d;   // %s %s", name, p.offset,
          util.c_comment(v.param), shape)
      end
    end
    return { base = name, shape = v.shape, strides = v.strides }
  end
  function s.lit(v) return util.c_float(v, kernels_c.TYPES[l.settings.compute].lit_suffix) end
  function s.refuse(node, why)
    diag.fatal(node.where, string.format("%s cannot be generated position by position: %s: %s", e.name,
      node.module and node.module.call_text or node.op, why))
  end
  local body = {}
  for _, node in ipairs(e.steps) do
    local rule = ops_cpu[node.op] and ops_cpu[node.op].step
    if not rule then s.refuse(node, "the C backend has no decode step for " .. node.op) end
    body[#body + 1] = "    " .. node_comment(g, node)
    body[#body + 1] = "    " .. shapes_comment(node) .. string.format("  (position t of dim %d)", e.axis[node.out] - 1)
    for _, x in ipairs(rule(s, node)) do body[#body + 1] = "        " .. x end
    local f = e.round[node.out]
    if f then   -- forward stores it in f: the same rounding
      body[#body + 1] = string.format("        { real *y_ = %s; for (int i = 0; i < %d; i++) y_[i] = k_round_%s(y_[i]); }   // stored as %s",
        s.row(node.out), s.R(node.out), f, f)
    end
  end
  local lg = e.bufs[e.logits]
  local where = string.format("%s:%d", e.where.file, e.where.line)
  local h = host_c.sample_header(e, size, #copies > 0)
  local c = {
    template.source("templates/c/sample_kernels.inc"),
    "int model_sample_begin(Model *m) {",
    "    if (!m->decode) m->decode = alloc_zeroed(sizeof(real) * SAMPLE_ARENA);",
    string.format("    if (!m->decode_scratch) m->decode_scratch = alloc_zeroed(sizeof(real) * %d);", e.scratch),
  }
  if #copies > 0 then
    c[#c + 1] = "    if (!m->decode || !m->decode_scratch) return -1;"
    c[#c + 1] = "    // the parameters as the step reads them (forward's casts), from this run's weights"
    for _, x in ipairs(copies) do c[#c + 1] = x end
    c[#c + 1] = "    return 0;"
  else
    c[#c + 1] = "    return m->decode && m->decode_scratch ? 0 : -1;"
  end
  for _, x in ipairs {
    "}",
    "",
    string.format("// %s  <- %s: %s (sampling), one position at a time", e.name, util.c_comment(where),
      util.c_comment(string.format("autoregress(logits %s, tokens %s, temperature %g, top_k %d)",
        util.shape_str(e.logits.shape), util.shape_str(e.idx.shape), e.temperature, e.top_k))),
    "const real *model_sample_step(Model *m, const int64_t *tok, int from, int n) {",
    "    real *D = m->decode;",
  } do c[#c + 1] = x end
  for _, x in ipairs(decls) do c[#c + 1] = x end
  c[#c + 1] = "    for (int t = from; t < n; t++) {"
  for _, x in ipairs(body) do c[#c + 1] = x end
  c[#c + 1] = "    }"
  c[#c + 1] = string.format("    return D + %d + (size_t)(n - 1) * %d;", lg.offset, lg.row)
  c[#c + 1] = "}"
  return { sample_h = h, sample_body = table.concat(c, "\n") }
end

-- FSDP FULL_SHARD (gen/strategy.lua, gen/plan.lua's units): the kernels read a parameter
-- in the one buffer its unit is gathered into, so before an op that reads another unit
-- than the one gathered last, that unit is all-gathered (in forward, and again from the
-- first in backward: reshard_after_forward); after the backward op that makes a unit's
-- last gradient final, its gradients are reduce-scattered.  An op that reads two units
-- at once (a weight tied across units) cannot be run from one buffer: refused at its line.
function emit.gather_units(l, w)
  local st = l.state
  local function unit_name(u) return st.units[u].key == "" and "the root's" or ("'" .. st.units[u].key .. "'") end
  local function gathers(ops, reads, phase)
    local cur
    for _, op in ipairs(ops) do
      local read = op.lines and reads[op.node]
      local u, names = nil, {}
      for k, p in pairs(read or {}) do u = u and math.min(u, k) or k; names[#names + 1] = string.format("%s (unit %s)", p, unit_name(k)) end
      if #names > 1 then
        table.sort(names)
        diag.fatal(op.node.where, string.format("fsdp FULL_SHARD: %s reads parameters of two units at once, %s (a weight tied across units); " ..
          "make them one unit (auto_wrap_policy) or use sharding_strategy = 'SHARD_GRAD_OP'",
          op.node.op, table.concat(names, " and ")))
      end
      if u and u ~= cur then
        table.insert(op.lines, 1, string.format("fsdp_gather_unit(%d);   // FSDP: unit %d (%s) all-gathered for its %s", u - 1, u - 1, unit_name(u), phase))
        cur = u
      end
    end
  end
  gathers(w.forward, w.ef.units_read, "forward")
  gathers(w.backward, w.eb.units_read, "backward")
  -- each unit's gradients, reduce-scattered out of its buffer (gen/plan.lua's slots) right
  -- after the backward node that finishes them (before the next op with a kernel: a unit
  -- sharing the buffer writes there first); one whose last write cannot be placed, after
  -- the backward's last op.  A unit no gradient reaches has nothing to reduce.
  local at, final = {}, {}
  for k, node in ipairs(l.autodiff.backward) do at[node] = k end
  for u, unit in ipairs(st.units) do final[u] = unit.slot and unit.to end
  local done = {}
  local function ready(op, u, first)
    done[u] = true
    table.insert(op.lines, first and 1 or #op.lines + 1,
      string.format("fsdp_unit_grads_ready(%d);   // FSDP: unit %d's gradients are final: reduce-scattered", u - 1, u - 1))
  end
  for i, op in ipairs(w.backward) do
    for u = #st.units, 1, -1 do   -- (prepended: the lines read in unit order)
      if final[u] and not done[u] and final[u] < at[op.node] then ready(op, u, true) end
    end
    for u = 1, #st.units do
      if final[u] and not done[u] and (final[u] <= at[op.node] or i == #w.backward) then ready(op, u, false) end
    end
  end
end

-- model_zero_grad's body: the parameter gradients that the backward's first writers
-- store (`stored`: names, gen/kernels_c.lua's acc_params) are left as they are; the
-- rest of the arena is cleared.  Returns the body and the line that ends model_backward.
function emit.zero_grad_lines(st, stored)
  if not next(stored) then
    return "    memset(m->grads, 0, sizeof(state_t) * NUM_PARAMS);", ""
  end
  -- runs of the other tensors (the alignment padding between tensors is never written)
  local lines, from, upto, kept, total = {}, nil, nil, 0, 0
  local function clear()
    if from then lines[#lines + 1] = string.format("    memset(m->grads + %d, 0, sizeof(state_t) * %d);", from, upto - from) end
    from = nil
  end
  for _, e in ipairs(st.params) do
    total = total + e.numel
    if stored[e.name] then
      clear()
      kept = kept + e.numel
    else
      from, upto = from or e.offset, e.offset + e.numel
    end
  end
  clear()
  table.insert(lines, 1, string.format("    // %d of %d gradient elements are stored by their first writer in the next model_backward", kept, total))
  lines[#lines + 1] = "    m->grads_zeroed = 1;"
  return table.concat(lines, "\n"), "\n    m->grads_zeroed = 0;   // (a later backward adds: accumulation)"
end

-- The model's files (model.h, model.c, precision_plan.tsv) for the lowered table `l`
-- (gen/pipeline.lua).  Returns { [filename] = text } and what the operand contexts
-- counted (kernels_c.counted).
function emit.model(l)
  local g, sp = l.graph, l.spec
  local precision = l.precision
  local prec = require "precision"
  local settings = l.settings
  local ty = kernels_c.TYPES[settings.compute]
  local batch_max = l.batch_max
  local st, p = l.state, l.plan

  -- the kernels' calls (gen/kernels_c.lua), each op after the spec line it came from
  local w = kernels_c.walk(l)
  local ef, eb, em = w.ef, w.eb, w.em
  local full_shard = l.strategy and l.strategy.sharding == "FULL_SHARD"
  if full_shard then emit.gather_units(l, w) end
  local fwd = emit.forward_lines(g, w)
  if not ef.uses_training then table.insert(ef.decls, "    (void)training;   // no op of this model behaves differently in training") end
  -- DDP (gen/strategy.lua): after the backward op that makes a bucket's last gradient
  -- final, that bucket's all-reduce starts; between ops, MPI advances the started ones
  -- (a training_step's gradients are averaged before each optimizer's step instead: gen/user_step.lua)
  local ready = {}
  local ddp = l.strategy and l.strategy.kind == "ddp"
  local in_backward = ddp and not l.strategy.averaged
  if in_backward then
    local at = {}
    for k, node in ipairs(l.autodiff.backward) do at[node] = k end
    local by_k = {}
    for i, b in ipairs(require("strategy").buckets(l, (require("strategy").grad_type(l.settings)))) do
      if b.ready ~= math.huge then
        by_k[b.ready] = by_k[b.ready] or {}
        table.insert(by_k[b.ready], i - 1)
      end
    end
    for node, k in pairs(at) do ready[node] = by_k[k] end
  end
  local bwd = {}
  for _, op in ipairs(w.backward) do
    bwd[#bwd + 1] = ""
    bwd[#bwd + 1] = node_comment(g, op.node, "  (backward)")
    for _, x in ipairs(indent(op.lines)) do bwd[#bwd + 1] = x end
    if in_backward then
      for _, i in ipairs(ready[op.node] or {}) do
        bwd[#bwd + 1] = string.format("    ddp_grad_ready(%d);   // DDP: bucket %d's gradients are final: its all-reduce starts", i, i)
      end
      bwd[#bwd + 1] = "    ddp_progress();"
    end
  end
  if in_backward then
    table.insert(eb.decls, "    void ddp_grad_ready(int bucket), ddp_progress(void);   // runtime/ddp.h (DDP)")
  end
  if full_shard then
    table.insert(ef.decls, "    void fsdp_gather_unit(int unit);   // runtime/ddp.h (FSDP FULL_SHARD)")
    table.insert(eb.decls, "    void fsdp_gather_unit(int unit), fsdp_unit_grads_ready(int unit);   // runtime/ddp.h (FSDP FULL_SHARD)")
  end
  if eb.uses_training then table.insert(eb.decls, "    const int training = 1;") end
  local zero_grad_body, grads_done = emit.zero_grad_lines(st, eb.stored_params)
  -- the backward's parameters it reads (the context records each use)
  if not eb.uses_batch then table.insert(eb.decls, "    (void)batch;") end
  if not eb.uses_B then table.insert(eb.decls, "    (void)B;") end

  -- metrics
  local loss_node = l.trace.outputs[1].node
  local mbody
  if w.metrics then
    local x = loss_node.inputs[1]
    mbody = table.concat(accuracy_lines(loss_node, w.metrics.pred, w.metrics.target, "real", em.batch(x), em.numel(x)), "\n")
    local lines = {}
    for _, x in ipairs(em.wrap({ false })) do lines[#lines + 1] = x and ("    " .. x) or mbody end
    mbody = table.concat(lines, "\n")
  end
  local has_accuracy = mbody ~= nil
  if not mbody then mbody = "    (void)m; (void)batch; (void)B;\n    *correct = 0;\n    *count = 0;"
  else
    mbody = table.concat(em.decls, "\n") .. "\n" .. mbody
    if not em.uses_batch then mbody = "    (void)batch;\n" .. mbody end
  end

  -- train.log's metrics: model_user_metrics reads their values after model_forward
  local um_decl, um_body = "", ""
  if #w.user_metrics > 0 then
    local eu, names, reduces, reads = w.eu, {}, {}, {}
    for i, u in ipairs(w.user_metrics) do
      names[i] = util.c_string(u.name)
      reduces[i] = "USER_METRIC_" .. u.reduce:upper()
      reads[i] = string.format("    values[%d] = (double)%s[0];   // %s", i - 1, u.ptr, util.c_comment(u.name))
    end
    local lines = {}
    for _, x in ipairs(eu.wrap({ false })) do lines[#lines + 1] = x and ("    " .. x) or table.concat(reads, "\n") end
    if not eu.uses_batch then table.insert(lines, 1, "    (void)batch;") end
    if not eu.uses_B then table.insert(lines, 1, "    (void)B;") end
    um_decl = table.concat({ "",
      string.format("// train.log's metrics (%s): after model_forward, their values on the batch", util.c_comment(sp.file)),
      string.format("#define NUM_USER_METRICS %d", #w.user_metrics),
      "enum { USER_METRIC_MEAN, USER_METRIC_SUM, USER_METRIC_MAX };   // log_reduce: over an epoch's or an evaluation's batches",
      "extern const char *const model_user_metric_names[NUM_USER_METRICS];",
      "extern const int model_user_metric_reduce[NUM_USER_METRICS];",
      "void model_user_metrics(const Model *m, const Batch *batch, int B, double *values);" }, "\n")
    um_body = table.concat({ "",
      string.format("const char *const model_user_metric_names[NUM_USER_METRICS] = { %s };", table.concat(names, ", ")),
      string.format("const int model_user_metric_reduce[NUM_USER_METRICS] = { %s };", table.concat(reduces, ", ")),
      "",
      "void model_user_metrics(const Model *m, const Batch *batch, int B, double *values) {",
      table.concat(eu.decls, "\n"),
      table.concat(lines, "\n"),
      "}", "" }, "\n")
  end

  local sl = kernels_c.scratch_lines(l)
  local scratch_body = #sl > 0 and table.concat(sl, "\n") or "    // no op needs scratch space"

  -- the batch: every field of the data source
  local fields = l.fields
  local batch = host_c.batch_tables(fields, "real")

  local loss_desc = string.format("%s", loss_node and loss_node.op or "loss")
  local values = {
    model_name = g.model_rec.class, spec_file = sp.file, precision = precision, ctype = ty.ctype,
    precision_summary = prec.summary(l.pp),
    state_ctype = settings.state == "bf16" and "uint16_t" or settings.state == "f16" and "_Float16"
      or prec.FORMATS[settings.state].ctype,
    state_format = settings.state, state_is_real = settings.state == settings.compute and 1 or 0,
    loss_scaling = settings.loss_scaling and 1 or 0,
    act_bytes = p.nacts, dact_bytes = p.ngrads,
    num_wide = w.num_wide,
    spec_hash = l.spec_hash, batch_max = batch_max,
    num_params = st.nparams, num_buffers = st.nbuffers, num_counters = #st.counters,
    num_ints = p.nint,
    num_param_tensors = #st.params, num_buffer_tensors = #st.buffers, num_counter_tensors = #st.counters,
    batch_fields = table.concat(batch.fields, "\n"), num_batch_fields = #fields, loss_desc = loss_desc,
    has_accuracy = has_accuracy and 1 or 0, user_metrics_decl = um_decl,
    prediction_format = w.epred.place(loss_node.inputs[1]).fmt or settings.compute,
  }
  local sample = emit.sample_code(l)
  values.sample_h = sample.sample_h
  -- a training_step (gen/user_step.lua): its forward runs and backwards, each a function
  local step_c, step_protos
  if l.autodiff.segments then
    local wide
    step_c, step_protos, wide = require("user_step").model_c(l, function(list) return emit.forward_lines(g, { forward = list }) end,
      function(node, suffix) return node_comment(g, node, suffix) end)
    values.num_wide = math.max(values.num_wide, wide)
  end
  local files = {}
  files["precision_plan.tsv"] = kernels_c.precision_plan(l, w)
  files["model.h"] = template.fill("templates/c/model.h.in", values)
  files["model.c"] = template.fill("templates/c/model.c.in", {
    model_name = g.model_rec.class, spec_file = sp.file,
    param_info = tensor_info_rows(st.params), buffer_info = tensor_info_rows(st.buffers),
    counter_info = tensor_info_rows(st.counters),
    batch_info = table.concat(batch.info, "\n"), batch_switch = table.concat(batch.switch, "\n"),
    init_body = init_lines(st, g.inits),
    forward_decls = table.concat(ef.decls, "\n"), forward_body = table.concat(fwd, "\n"), loss_ptr = w.loss,
    backward_decls = table.concat(eb.decls, "\n"), backward_body = table.concat(bwd, "\n"), dloss_ptr = w.dloss,
    dact_zero = p.reuse and "    // activation gradients: each op stores or clears the ones it writes first (gen/plan.lua's reuse)"
      or kernels_c.dact_zero_lines(p),
    zero_grad_body = zero_grad_body, grads_done = grads_done,
    metrics_body = mbody, scratch_body = scratch_body, user_metrics_body = um_body, sample_body = sample.sample_body,
    prediction_decls = table.concat(w.epred.decls, "\n"), prediction_ptr = w.prediction,
    -- (nothing when off: the file is byte for byte the one without detect_anomaly)
    -- DDP: one element after the gradients, the stop request that rides in their all-reduce (runtime/ddp.c)
    grads_count = in_backward and "(NUM_PARAMS + 1)" or "NUM_PARAMS",
    anomaly_include = l.options.detect_anomaly and '\n#include "anomaly.h"   // detect_anomaly: NaN/Inf checks after every op' or "",
  })
  if step_c then
    files["model.c"] = files["model.c"] .. step_c
    files["model.h"] = files["model.h"]:gsub("\n#endif%s*$", function(tail)
      return "\n\n// train.training_step's parts (model.c; optim.c's model_user_step calls them in order)\n" .. step_protos .. "\n" .. tail
    end)
  end
  return files, kernels_c.counted(w)
end

-- The C program's blocks of the training loop (templates/loop/train.c.in's @{holes}:
-- what differs from the CUDA program's, gen/emit_cuda.lua): the loop runs the model
-- and the optimizer (optim.c) on the host.
local TRAIN_BLOCKS = {
  header = [==[
// ${model_name}: the training program, generated by loom from ${spec_file}.
// One plain loop, top to bottom: load data → for each epoch, each batch:
// forward, loss, backward, (clip, step every ACCUMULATE micro-batches and on the
// epoch's last), log → validate → callbacks → checkpoint.  Regenerate rather than edit.
#include "model.h"
#include "optim.h"
#include "sample.h"
]==],
  device_schedule = "",
  args_fields = "",
  usage = [==[
    fprintf(f, "usage: %s [--epochs N] [--max-steps N] [--seed N] [--resume CKPT] [--load-raw FILE [--load-raw-strict true|false]] [--out DIR] [--data DIR] [--quiet]\n"
               "       [--sample N [--prompt TEXT] [--temperature X] [--top-k K] [--no-kv-cache]]\n"
               "trains " MODEL_NAME " (generated by loom from %s)\n", "train", "${spec_file}");
]==],
  args_defaults = [==[
    Args a = { DEFAULT_EPOCHS, DEFAULT_MAX_STEPS, DEFAULT_SEED, NULL, "${default_out}", NULL, LOAD_RAW_PATH, LOAD_RAW_STRICT, 0, 0 };
]==],
  args_parse = "",
  save_from_device = "",
  weights_to_device = "",
  state_to_device = "",
  eval_forward = [==[
        total += (double)model_forward(m, &batch, B, 0) * B;
]==],
  main_start = [==[
    threads_setup(argv);   // OpenMP's wait policy and thread count (may re-execute)
    Args args = parse_args(argc, argv);
]==],
  model_setup = [==[
    if (model_alloc(&m)) die("out of memory");
    model_init(&m, args.seed);
    Optimizer opt;
    if (optimizer_alloc(&opt)) die("out of memory");
]==],
  resume_steps = "",
  loop_vars = "${loop_vars}",
  micro_batch = [==[
        while ((rc = loader_next(train_loader, &db, &err)) == DATA_OK) {
            bind_batch(&batch, &db, &train_ds);
            int B = (int)db.size;
            // forward and backward of one micro-batch; a step is ACCUMULATE micro-batches,
            // or the epoch's leftover ones (Lightning steps on them; the loss is still
            // divided by ACCUMULATE, as Lightning's is): no gradient crosses an epoch
            int64_t in_step = db.index % ACCUMULATE;
            m.step = (uint64_t)(rs.step * ACCUMULATE + in_step);   // dropout's stream: one per micro-batch
@{forward}   the micro-batch's forward and loss (a training_step: the spec's step)
@{grads_begin}   DDP/FSDP: whether this micro-batch's backward reduces the gradients over the ranks
${backward}
            loss_sum += loss; loss_count++;
            rs.batch = db.index + 1;
            if (in_step + 1 < ACCUMULATE && db.index + 1 < batches_per_epoch) continue;

@{grads_finish}   DDP/FSDP: the gradients' mean over the ranks (FSDP: this rank's shard of it)
${step_block}
@{after_step}   FSDP SHARD_GRAD_OP: every rank's updated shard on every rank
@{zero_grad}   the gradients zeroed for the next step (FSDP FULL_SHARD: this rank's shard)
            rs.step++;

            double mean_loss = loss_sum / loss_count;
            epoch_loss_sum += mean_loss; epoch_loss_count++;
@{step_over_ranks}   DDP/FSDP: the stop request and the step's loss over the ranks
            if (!args.quiet) progress_step(&prog, (int)rs.epoch, db.index / ACCUMULATE, mean_loss, ${step_items});
            loss_sum = 0; loss_count = 0;
${log_step}
            if (args.max_steps && rs.step >= args.max_steps) { stop = 1; break; }
            if (${stop_requested}) { stop = 2; break; }
]==],
  -- the micro-batch's slots (one process: the plain loop; rank_blocks fills them)
  forward = "            real loss = model_forward(&m, &batch, B, 1);\n",
  grads_begin = "", grads_finish = "", after_step = "", step_over_ranks = "",
  zero_grad = "            model_zero_grad(&m);\n",
  summary_extra = "",
  sample_fn = "${sample_fn}",
}

-- The bytes of one parameter element (the gradient arena's format) and its lc_dtype.
local function grad_type(l) return require("strategy").grad_type(l.settings) end

-- The loop's values for the slots of TRAIN_BLOCKS.micro_batch: one process's
local SINGLE_VALUES = { step_items = "(int64_t)B * loss_count", stop_requested = "signals_stop_requested()" }

-- TRAIN_BLOCKS with the ranks (DDP's and FSDP's): MPI up, rank 0 alone printing; a stop
-- request every rank's at once; the step's loss and train.log's values over every rank
-- on the steps that show them (`loop.ranks_step`, gen/emit_train.lua).  Returns the
-- blocks and the values of the micro-batch's slots.
local function rank_blocks(l, loop)
  local b = {}
  for k, v in pairs(TRAIN_BLOCKS) do b[k] = v end
  local s = l.strategy
  b.header = b.header .. "#include \"ddp.h\"\n"
  b.step_over_ranks = loop.ranks_step
  local values = { step_items = "(int64_t)B * loss_count * ddp_world()", stop_requested = "stop_requested" }
  b.main_start = "    threads_setup(argv);   // OpenMP's wait policy and thread count (may re-execute)\n" .. emit.ranks_start(s)
  return b, values
end

-- main's start with the ranks (both backends): MPI up, the flags, and every rank but 0
-- silenced (its outputs in a private directory)
function emit.ranks_start(s)
  return string.format([==[
    // %s: %d ranks expected (fabric.devices); mpirun starts them (loom train)
    ddp_init(&argc, &argv, %s);   // --ddp-timeout S: a collective waiting longer ends the job
    Args args = parse_args(argc, argv);
    if (ddp_rank() != 0) {   // rank 0 alone prints, logs and writes checkpoints
        args.quiet = 1;
        args.out = ddp_private_dir();
        if (!freopen("/dev/null", "w", stdout)) ddp_die("cannot silence stdout");
    }
]==], s.kind == "fsdp" and "FSDP" or "DDP", s.devices, string.format("%.17g", s.timeout))
end

-- the gradient buckets' table rows (ddp_bucket: { first element, elements }, both backends)
function emit.bucket_rows(buckets)
  local rows = {}
  for _, k in ipairs(buckets) do
    rows[#rows + 1] = string.format("        { %d, %d },   // %d parameters, %s ... %s (%.2f MB)", k.first, k.last - k.first,
      #k.params, k.params[1], k.params[#k.params], k.bytes / 1e6)
  end
  return rows
end

-- DDP (gen/strategy.lua): the C program's blocks with the ranks in them.  MPI starts
-- after threads_setup's re-exec; a rank other than 0 prints nothing (stdout goes to
-- /dev/null) and writes its logs into a private directory removed at exit, and only rank
-- 0 writes checkpoints; parameters and buffers are rank 0's at the start; each step's
-- last micro-batch all-reduces the gradients (the buckets start inside model_backward as
-- their gradients become final; the step waits for them); a stop request (a signal) is
-- every rank's as soon as one rank has it: it rides in the bucket that ends last (one
-- element after the gradients), so a step carries no collective of its own for it.
function emit.ddp_blocks(l, loop)
  local b, values = rank_blocks(l, loop)
  local s = l.strategy
  local broadcast = [==[
    ddp_broadcast(m.params, sizeof(state_t) * NUM_PARAMS);
    ddp_broadcast(m.buffers, sizeof(state_t) * NUM_BUFFERS);
    ddp_broadcast(m.counters, sizeof(int64_t) * NUM_COUNTERS);
]==]
  b.save_from_device = "    if (ddp_rank() != 0) return;   // DDP: rank 0 writes the checkpoints (every rank holds the same state)\n"
  local function summary(waiting)
    return string.format([==[
    if (!args.quiet) printf("ddp: %%d ranks; all-reduced %%.3f MB per rank in this run, %%.2f s waiting for it %s\n",
                            ddp_world(), ddp_reduced_bytes / 1e6, ddp_wait_seconds);
]==], waiting)
  end
  if s.averaged then
    -- a training_step: model_user_step averages each optimizer's gradients before its step
    -- (gen/user_step.lua, runtime/ddp.h's ddp_average_grads); the stop request is agreed
    -- on after the step (emit_train's ranks_step: ddp_any)
    b.model_setup = b.model_setup .. [==[
    // DDP: every rank starts from rank 0's parameters and buffers (DDP's broadcast at wrap time);
    // the training_step averages its optimizers' gradients before each step (model_user_step)
]==] .. broadcast
    b.summary_extra = summary("before the steps")
    return b, values
  end
  local esize, lct = grad_type(l)
  local rows = emit.bucket_rows(require("strategy").buckets(l, esize))
  b.model_setup = b.model_setup .. string.format([==[
    // DDP: the gradient buckets (PyTorch DDP's reverse parameter order, about %s MB each):
    // { first element, elements } of m.grads, each all-reduced as soon as its gradients are final
    static const ddp_bucket buckets[] = {
%s
    };
    ddp_set_buckets(buckets, %d, m.grads, NUM_PARAMS, %s);   // (m.grads[NUM_PARAMS]: the stop request, reduced with the bucket that ends last)
    // every rank starts from rank 0's parameters and buffers (DDP's broadcast at wrap time)
]==], tostring(s.cap_mb), table.concat(rows, "\n"), #rows, lct) .. broadcast
  b.grads_begin = [==[
            // DDP: the step's last micro-batch all-reduces its gradients; the others only accumulate
            // them (Fabric's no_backward_sync)
            ddp_begin_backward(in_step + 1 >= ACCUMULATE || db.index + 1 >= batches_per_epoch);
]==]
  b.grads_finish = "            ddp_finish_grads();   // the gradients are now the mean over ranks\n"
  b.summary_extra = summary("after backward")
  return b, values
end

-- FULL_SHARD's units table's rows (runtime/ddp.h's fsdp_unit, both backends): { first
-- element, elements, where the backward writes its gradients in the units' buffers }
function emit.unit_rows(l)
  local rows = {}
  for i, u in ipairs(l.state.units) do
    rows[#rows + 1] = string.format("        { %d, %d, %d },   // unit %d, %s: %d parameter%s, %s ... %s", u.first, u.count,
      u.slot and u.slot * l.state.unit_max or -1, i - 1,
      u.key == "" and "the root's" or util.c_comment(u.key), #u.params, #u.params == 1 and "" or "s", util.c_comment(u.params[1]), util.c_comment(u.params[#u.params]))
  end
  return rows
end

-- FSDP, SHARD_GRAD_OP (gen/strategy.lua; runtime/ddp.h): DDP's ranks, outputs and stop
-- requests, but the step reduce-scatters the gradients (each rank gets the mean of its
-- shard), the optimizer updates that shard with its shard of the state, and the
-- parameters are all-gathered after it; a checkpoint is a full state dict (Fabric's
-- default): the state's shards gathered on rank 0, which writes them; each rank keeps
-- its part of the full tensors when it resumes (gen/emit_train.lua).
--
-- FULL_SHARD: the parameters too are this rank's shard once the run has its starting
-- weights (initialised and broadcast, or resumed: resume_steps), and m.params becomes
-- the buffer model_forward and model_backward gather each unit into (emit.gather_units);
-- the optimizer updates the shard, and no all-gather follows the step (the next forward
-- gathers); a checkpoint gathers the parameters' shards on rank 0 as the state's.
function emit.fsdp_blocks(l, loop)
  local b, values = rank_blocks(l, loop)
  local s = l.strategy
  local full_shard = s.sharding == "FULL_SHARD"
  local _, lct = grad_type(l)
  local opt = l.spec.train.optimizer
  local states = require("optimizers").rule(opt.kind).states(opt.args)
  local units = ""
  if full_shard then
    local rows = emit.unit_rows(l)
    units = string.format([==[
    // FULL_SHARD's units (%s): { first element, elements } of the parameter arena,
    // each gathered whole into m.params (after resume_steps) for the ops that read it, and
    // where the backward writes its gradients in m.grads, %d buffer%s of the largest unit's
    // size (units whose backwards overlap have their own), reduce-scattered from there
    static const fsdp_unit units[] = {
%s
    };
    fsdp_set_units(units, %d);
    m.grads = fsdp_shard_grads(m.grads, %d, ACCUMULATE > 1);   // the whole gradient arena never exists
]==], util.c_comment(s.policy), l.state.grad_slots, l.state.grad_slots == 1 and "" or "s", table.concat(rows, "\n"), #rows,
      l.state.grad_slots * l.state.unit_max)
    b.resume_steps = "    m.params = fsdp_shard_params(m.params);   // FSDP FULL_SHARD: from here on this rank holds its shard of the parameters\n"
  end
  b.model_setup = string.format([==[
    if (model_alloc(&m)) die("out of memory");
    model_init(&m, args.seed);
    // FSDP (%s): the flat parameter arena cut into one shard per rank; this rank's
    // optimizer state and averaged gradients are its shard's%s
    fsdp_init(NUM_PARAMS, m.params, m.grads, %s);%s
%s    Optimizer opt;
    if (optimizer_alloc(&opt)) die("out of memory");
    // every rank starts from rank 0's parameters and buffers
    ddp_broadcast(m.params, sizeof(state_t) * NUM_PARAMS);
    ddp_broadcast(m.buffers, sizeof(state_t) * NUM_BUFFERS);
    ddp_broadcast(m.counters, sizeof(int64_t) * NUM_COUNTERS);
    if (!args.quiet) {   // what each rank holds (one rank: the unsharded figures)
        double pb, gb, gs, ss;
        fsdp_bytes(&pb, &gb, &gs, &ss);%s
        printf("fsdp: %s over %%d ranks; per rank: parameters %%.0f B%s, gradients %%.0f B (%s) + %%.0f B (shard), "
               "optimizer state %%.0f B (%d buffer%s of %%.0f B); parameters+gradients+optimizer %%.0f B, of which sharded %%.0f B\n",
               ddp_world(), pb, %sgb, gs, %d * ss, ss, pb + gb + gs + %d * ss, %sgs + %d * ss);
    }
]==], s.sharding, full_shard and ", and so are its parameters" or "", lct,
    require("precision").optimizer_format(l.settings) ~= l.settings.state and
      "\n    fsdp_state_dtype(LC_F32);   // the optimizer state stays float32 beside 16-true's float16 parameters" or "",
    units,
    full_shard and "\n        double ps = (double)fsdp_shard_len() * sizeof(state_t);   // FULL_SHARD: the parameters' shard (the rest: the gathered unit)" or "",
    s.sharding, full_shard and " (shard %.0f B + the largest unit gathered %.0f B)" or "",
    full_shard and string.format("the units' gradient buffer%s%s", l.state.grad_slots == 1 and "" or "s",
      l.spec.train.accumulate > 1 and " and accumulation's landing" or "") or "backward's arena", #states, #states == 1 and "" or "s",
    full_shard and "ps, pb - ps, " or "", #states, #states, full_shard and "ps + " or "", #states)
  if full_shard or #states > 0 then
    -- a full state dict: the optimizer state's shards (and FULL_SHARD's parameters') gathered on rank 0
    local gather, free = {}, {}
    if full_shard then
      gather = { "        Model full_m = *m;", "        full_m.params = fsdp_gather_param_shards();" }
      free = { "        free(full_m.params);" }
    end
    for _, st in ipairs(states) do
      gather[#gather + 1] = string.format("        full.%s = fsdp_gather(o->%s);", st, st)
      free[#free + 1] = string.format("        free(full.%s);", st)
    end
    b.save_from_device = string.format([==[
    // FSDP: a full state dict (Fabric's default): every rank sends its shard of the
    // %s to rank 0, which writes the
    // whole tensors as one rank would
    static int gathered = 0;
    if (!gathered) {
        Optimizer full = *o;
%s
        gathered = 1;
        if (ddp_rank() == 0) save_checkpoint(path, %s, &full, rs, ls);
        gathered = 0;
%s
        return;
    }
]==], full_shard and "parameters and of the optimizer state" or "optimizer state", table.concat(gather, "\n"),
      full_shard and "&full_m" or "m", table.concat(free, "\n"))
  end
  b.grads_begin = full_shard and [==[
            // FSDP FULL_SHARD: every micro-batch's backward reduce-scatters each unit's gradients
            // into this rank's shard, where a step's micro-batches add up (PyTorch FSDP's sharded
            // gradients: no whole gradient arena is kept across them)
            fsdp_begin_backward(in_step == 0);
]==] or [==[
            // FSDP: the step's last micro-batch reduce-scatters its gradients; the others only
            // accumulate them (Fabric's no_backward_sync)
            ddp_begin_backward(in_step + 1 >= ACCUMULATE || db.index + 1 >= batches_per_epoch);
]==]
  if full_shard then b.zero_grad = "            fsdp_zero_grads();   // this rank's gradient shard (each unit's buffer was zeroed once reduce-scattered)\n" end
  b.grads_finish = "            fsdp_finish_grads();   // this rank's shard of the gradients is now their mean over ranks\n"
  b.after_step = full_shard and "            // (FULL_SHARD: the next forward gathers each unit's updated shards)\n"
    or "            fsdp_gather_params();   // every rank's updated shard on every rank\n"
  b.summary_extra = full_shard and [==[
    if (!args.quiet) printf("fsdp: %d ranks; reduce-scattered and all-gathered %.3f MB per rank in this run (units all-gathered: %.3f MB), %.2f s waiting for the gradients\n",
                            ddp_world(), ddp_reduced_bytes / 1e6, fsdp_gathered_bytes / 1e6, ddp_wait_seconds);
]==] or [==[
    if (!args.quiet) printf("fsdp: %d ranks; reduce-scattered and all-gathered %.3f MB per rank in this run, %.2f s waiting for the gradients\n",
                            ddp_world(), ddp_reduced_bytes / 1e6, ddp_wait_seconds);
]==]
  return b, values
end

-- train.c's sampling: --sample N with the spec's entry point (gen/entries.lua), or the
-- one line that says why this program cannot
local SAMPLE_FN = [==[
static void sample_check(const SampleArgs *a) {
    if (a->top_k > SAMPLE_VOCAB) {
        fprintf(stderr, "train: --top-k %lld is more than the vocabulary (%d)\n", (long long)a->top_k, SAMPLE_VOCAB);
        exit(2);
    }
}

// --sample N: SAMPLE_METHOD's tokens after the prompt (bytes: one token each), drawn one
// at a time.  The window is the last positions of the text, at most SAMPLE_CONTEXT; when
// a token would not fit, the window restarts at the last half of it (recomputed once),
// so that each new token costs one position's step over the cached ones
// (model_sample_step), not a forward over the whole window.  --no-kv-cache recomputes
// the window for every token (the same tokens, O(T) times the work).
static void sample_model(Model *m, const SampleArgs *a, uint64_t seed) {
    if (model_sample_begin(m)) die("out of memory (the sampling cache)");
    const char *prompt = a->prompt && a->prompt[0] ? a->prompt : "\n";
    size_t np = strlen(prompt), cap = np + (size_t)a->n;
    int64_t *seq = malloc(sizeof(int64_t) * cap);
    double *logits = malloc(sizeof(double) * SAMPLE_VOCAB), *scratch = malloc(sizeof(double) * SAMPLE_VOCAB);
    if (!seq || !logits || !scratch) die("out of memory (sampling)");
    for (size_t i = 0; i < np; i++) {
        seq[i] = (unsigned char)prompt[i];
        if (seq[i] >= SAMPLE_VOCAB_IN) {
            fprintf(stderr, "train: --prompt: byte %lld at offset %zu is outside the model's %d tokens\n",
                    (long long)seq[i], i, SAMPLE_VOCAB_IN);
            exit(2);
        }
    }
    sampler s;
    sampler_init(&s, a->temperature >= 0 ? a->temperature : SAMPLE_TEMPERATURE, a->top_k >= 0 ? (int)a->top_k : SAMPLE_TOP_K,
                 seed);
    int draw = SAMPLE_VOCAB < SAMPLE_VOCAB_IN ? SAMPLE_VOCAB : SAMPLE_VOCAB_IN;   // tokens the model can read back
    fwrite(prompt, 1, np, stdout);
    size_t len = np, start = 0, cached = 0;
    double t0 = now_seconds();
    for (int64_t i = 0; i < a->n; i++) {
        if (len - start > SAMPLE_CONTEXT) { start = len - (SAMPLE_CONTEXT + 1) / 2; cached = 0; }
        int n = (int)(len - start);
        const real *lg = model_sample_step(m, seq + start, a->no_kv_cache ? 0 : (int)cached, n);
        cached = (size_t)n;
        for (int v = 0; v < draw; v++) logits[v] = (double)lg[v];
        int tok = sampler_pick(&s, logits, draw, scratch);
        seq[len++] = tok;
        if (SAMPLE_VOCAB_IN <= 256) putchar(tok); else printf("%s%d", i ? " " : "", tok);
    }
    double secs = now_seconds() - t0;
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "sampled %lld tokens in %.3f s (%.1f tokens/s, %s)\n", (long long)a->n, secs,
            secs > 0 ? (double)a->n / secs : 0.0, a->no_kv_cache ? "no cache: the window recomputed per token" : "key/value cache");
    free(seq); free(logits); free(scratch);
}

// --resume CKPT --sample N: the checkpoint's weights, no training
static int sample_only(const SampleArgs *a, const char *resume, uint64_t seed) {
    Model m;
    if (model_alloc(&m)) die("out of memory");
    model_init(&m, seed);
    load_weights(resume, &m);
    sample_model(&m, a, seed);
    model_free(&m);
    return 0;
}
]==]
emit.SAMPLE_FN = SAMPLE_FN   -- (the CUDA program's too: gen/emit_cuda.lua)
local NO_SAMPLE_FN = [==[
static void sample_check(const SampleArgs *a) {
    (void)a;
    fprintf(stderr, "train: --sample: %s\n", SAMPLE_REFUSED);
    exit(2);
}
static void sample_model(Model *m, const SampleArgs *a, uint64_t seed) { (void)m; (void)a; (void)seed; }
static int sample_only(const SampleArgs *a, const char *resume, uint64_t seed) { (void)a; (void)resume; (void)seed; return 2; }
]==]

emit.NO_SAMPLE_FN = NO_SAMPLE_FN

-- The CPU program's files for the lowered table `l`: the model's (emit.model), the
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
  local full_shard = l.strategy and l.strategy.sharding == "FULL_SHARD"
  loop.train.sample_fn = (l.entries[1] and not l.entries[1].refused and not full_shard) and SAMPLE_FN or NO_SAMPLE_FN
  local kind = l.strategy and l.strategy.kind or "single"
  local ddp = kind ~= "single"   -- DDP's runtime and MPI: ddp and fsdp
  local blocks, slots = TRAIN_BLOCKS, SINGLE_VALUES
  if kind == "ddp" then blocks, slots = emit.ddp_blocks(l, loop)
  elseif kind == "fsdp" then blocks, slots = emit.fsdp_blocks(l, loop) end
  for k, v in pairs(slots) do loop.train[k] = v end
  if loop.user_step then
    -- a training_step: the step is model_user_step (optim.c), the spec's calls in order
    blocks = setmetatable({ forward = string.format("            real loss = model_user_step(&m, &opt, &batch, B, rs.step, rs.epoch, total_steps);   // train.training_step (%s:%d)\n",
      sp.file, l.graph.step.where.line) }, { __index = blocks })
  end
  files["train.c"] = template.fill("templates/loop/train.c.in", loop.train, false, blocks)
  files["optim.h"] = template.fill("templates/c/optim.h.in", loop.optim_h)
  files["optim.c"] = template.fill("templates/c/optim.c.in", loop.optim_c)
  if loop.user_step then
    files["optim.c"] = files["optim.c"] .. loop.user_step.code
    files["optim.h"] = files["optim.h"]:gsub("\n#endif%s*$", function(tail) return "\n" .. loop.user_step.protos .. "\n" .. tail end)
  end
  for name, text in pairs(loop.files) do files[name] = text end   -- the user's hooks
  local loomc = require "loomc"
  local data_rt = require("emit_train").data_runtime(sp)
  for _, prefix in ipairs(RUNTIME_PREFIXES) do
    for _, path in ipairs(loomc.embedded_list(prefix)) do
      if not CUDA_ONLY[path] and (ddp or not DDP_ONLY[path]) and not data_rt.skip[path] then
        files[path:match("([^/]+)$")] = template.source(path)
      end
    end
  end
  for _, path in ipairs(emit.SHARED_KERNEL_FILES) do files[path:match("([^/]+)$")] = template.source(path) end
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
    cc = ddp and "mpicc\n# DDP: OpenMPI's compiler wrapper (runtime/collectives.c needs mpi.h and libmpi)" or "cc",
    extra_cflags = l.options.extra_cflags, extra_ldflags = l.options.extra_ldflags, data_ldlibs = data_rt.ldlibs,
    -- -fno-math-errno: sqrtf in the optimizers' loops (Adam's denominator) vectorises only
    -- without errno (a call per element otherwise: tiny_gpt's AdamW took 10.7 ms of CPU
    -- a step, 2.5 without); sqrt is correctly rounded either way, so the bits are the same.
    -- (-mprefer-vector-width=512 changed no op's time in tiny_gpt's step: not used)
    opt_flags = l.options.debug and "-O0 -g -march=native" or "-O3 -march=native -fno-math-errno",
    objects = table.concat(objects, "\n"), object_list = table.concat(list, " "),
  })
  return { files = files, counted = counted }
end

return emit
