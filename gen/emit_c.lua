-- emit_c: the C backend.  Writes model.h / model.c (state layout, forward,
-- backward, initialisation) from templates/c/, with every size a constant and
-- every op preceded by the spec line it came from.  Loops and decisions live
-- here; the templates hold only named holes.
local util = require "util"
local diag = require "diag"
local ops_cpu = require "ops_cpu"
local template = require "template"
local plan_mod = require "plan"

local emit = {}

local TYPES = {
  ["32-true"] = { ctype = "float", sfx = "f32", lit_suffix = "f" },
  ["64-true"] = { ctype = "double", sfx = "f64", lit_suffix = "" },
}

local function ty_bytes(ty) return ty.ctype == "double" and 8 or 4 end

local function cname(name) return (name:gsub("[^%w]", "_")) end

local function literal(v, suffix)
  local s = string.format("%.17g", v)
  if tonumber(string.format("%.9g", v)) == v then s = string.format("%.9g", v) end
  if not s:find("[%.eEn]") then s = s .. ".0" end
  return s .. suffix
end

-- A C expression for the product of `shape`'s dims from..to, with B symbolic.
local function count_expr(shape, from, to)
  local n, batched = 1, false
  for i = from or 1, to or #shape do
    if shape[i] == "B" then batched = true else n = n * shape[i] end
  end
  if not batched then return tostring(n) end
  if n == 1 then return "B" end
  return "B * " .. n
end

-- The emitter context handed to the rules in gen/ops_cpu.lua (see there).
-- `read_only`: declare pointers const (a function that takes a const Model).
local function context(g, st, p, ty, ad, read_only)
  local e = { T = ty.ctype, sfx = ty.sfx, decls = {}, declared = {} }
  local function declare(name, line)
    if not e.declared[name] then
      e.declared[name] = true
      if read_only then line = line:gsub("^    real %*", "    const real *") end
      e.decls[#e.decls + 1] = line
    end
    return name
  end
  local function root(t)
    local a = p.acts[t]
    while a and a.source do t = a.source; a = p.acts[t] end
    return t
  end
  function e.ptr(t)
    t = root(t)
    if t.param then
      local s = st.by_name[t.param]
      return declare("p_" .. cname(t.param), string.format("    real *p_%s = m->params + %d;   // %s %s",
        cname(t.param), s.offset, t.param, util.shape_str(t.shape)))
    end
    if t.input then
      local ct = t.dtype == "int64" and "int64_t" or "real"
      return declare("in_" .. cname(t.input), string.format("    const %s *in_%s = batch->%s;   // %s", ct,
        cname(t.input), cname(t.input), util.shape_str(t.shape)))
    end
    local a = p.acts[t]
    return declare("a" .. t.id, string.format("    real *a%d = (real *)(m->acts + %d);   // %s", t.id, a.offset * ty_bytes(ty), util.shape_str(t.shape)))
  end
  function e.grad(t)
    t = root(t)
    if t.param then
      local s = st.by_name[t.param]
      return declare("g_" .. cname(t.param), string.format("    real *g_%s = m->grads + %d;", cname(t.param), s.offset))
    end
    local gr = p.grads[t]
    if not gr or not ad or not ad.needs_grad[t] then return "NULL" end
    return declare("d" .. t.id, string.format("    real *d%d = (real *)(m->dacts + %d);   // grad of a%d", t.id, gr.offset * ty_bytes(ty), t.id))
  end
  function e.save(node, name)
    local s = p.saves[node][name]
    local var = string.format("s%d_%s", node.index, name)
    if s.arena == "ints" then
      return declare(var, string.format("    int32_t *%s = m->ints + %d;", var, s.offset))
    end
    return declare(var, string.format("    real *%s = (real *)(m->acts + %d);", var, s.offset * ty_bytes(ty)))
  end
  function e.state(node, name)
    local full = (g.prefix_of[node.module] or "") .. name
    local s = st.by_name[full]
    if not s then return "NULL" end
    return declare("b_" .. cname(full), string.format("    real *b_%s = m->buffers + %d;   // %s", cname(full), s.offset, full))
  end
  function e.counter(node, name)
    local full = (g.prefix_of[node.module] or "") .. name
    local s = st.by_name[full]
    if not s then return "NULL" end
    return string.format("&m->counters[%d]", s.offset)
  end
  function e.numel(t) return count_expr(t.shape) end
  function e.rows(t, k) return count_expr(t.shape, 1, #t.shape - k) end
  function e.outer(t, before) return count_expr(t.shape, 1, before - 1) end
  function e.batch(t) return t.shape[1] == "B" and "B" or tostring(t.shape[1]) end
  function e.lit(v) return literal(v, ty.lit_suffix) end
  function e.call(kernel, ...)
    local args = table.pack(...)
    for i = 1, args.n do args[i] = tostring(args[i]) end
    return string.format("k_%s_%s(%s);", kernel, ty.sfx, table.concat(args, ", ", 1, args.n))
  end
  function e.local_name(node, what) return string.format("%s%d", what, node.index) end
  function e.scratch() return "m->scratch" end
  function e.training_only(expr) return "training ? " .. expr .. " : NULL" end
  function e.rng_stream(node) return string.format("(m->step << 20 | %du)", node.index) end
  return e
end

-- "// img_input.1  <- specs/paw.lua:7  Conv2d(3, 16, 3, {padding = \"same\"})"
local function node_comment(g, node)
  local label
  if node.module and node.module.forward then
    label = (g.prefix_of[node.module] or ""):gsub("%.$", "")
    return string.format("    // %s  <- %s:%d  %s", label, node.where.file, node.where.line, node.module.call_text)
  end
  return string.format("    // %s  <- %s:%d", node.op, node.where.file, node.where.line)
end

local function shapes_comment(node)
  local ins = {}
  for _, x in ipairs(node.inputs) do
    if not x.param then ins[#ins + 1] = util.shape_str(x.shape) end
  end
  return string.format("    // %s -> %s", table.concat(ins, ", "), util.shape_str(node.out.shape))
end

local function indent(lines)
  local out = {}
  for i, l in ipairs(lines) do out[i] = "    " .. l end
  return out
end

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
    rows[#rows + 1] = string.format("    {\"%s\", %d, %d, %d, {%s}},", s.name, s.offset, s.numel, #s.entry.shape,
      #shape > 0 and table.concat(shape, ", ") or "0")
  end
  if #rows == 0 then rows[1] = "    {\"\", 0, 0, 0, {0}}," end
  return table.concat(rows, "\n")
end

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
        line = line .. string.format("\n    memset(%s + %d, 0, sizeof(real) * %d);   // padding_idx row", ptr, init.padding_idx * row, row)
      end
    elseif init.kind == "ones" then
      line = string.format("init_fill(%s, %d, 1);", ptr, s.numel)
    else
      line = string.format("init_fill(%s, %d, 0);", ptr, s.numel)
    end
    lines[#lines + 1] = string.format("    %s   // %s", line, s.name)
  end
  for _, s in ipairs(st.buffers) do
    local v = s.entry.init.kind == "ones" and 1 or 0
    lines[#lines + 1] = string.format("    init_fill(m->buffers + %d, %d, %d);   // %s", s.offset, s.numel, v, s.name)
  end
  lines[#lines + 1] = "    memset(m->counters, 0, sizeof(int64_t) * NUM_COUNTERS);"
  return table.concat(lines, "\n")
end

-- Accuracy from the loss's inputs: argmax for class indices, a 0.5 threshold
-- (0 on logits) for binary targets.
local function metrics_body(e, loss_node)
  if not loss_node then return nil end
  local x, t = loss_node.inputs[1], loss_node.inputs[2]
  if loss_node.op == "cross_entropy" and t.dtype == "int64" then
    local C = x.shape[2]
    local S = 1
    for i = 3, #x.shape do S = S * x.shape[i] end
    return table.concat({
      string.format("    const real *logits = %s;   // %s", e.ptr(x), util.shape_str(x.shape)),
      string.format("    const int64_t *target = %s;", e.ptr(t)),
      "    int64_t right = 0, seen = 0;",
      string.format("    for (int n = 0; n < %s; n++) {", e.batch(x)),
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
    }, "\n")
  end
  if loss_node.op == "bce" or loss_node.op == "bce_with_logits" then
    local threshold = loss_node.op == "bce" and "0.5" or "0"
    return table.concat({
      string.format("    const real *pred = %s;", e.ptr(x)),
      string.format("    const real *target = %s;", e.ptr(t)),
      "    int64_t right = 0;",
      string.format("    for (int64_t i = 0; i < (int64_t)(%s); i++) right += ((pred[i] > %s) == (target[i] > 0.5));", e.numel(x), threshold),
      "    *correct = right;",
      string.format("    *count = (int64_t)(%s);", e.numel(x)),
    }, "\n")
  end
  return nil
end

-- Generates the model's files.  Returns { [filename] = text }, info.
function emit.model(g, opts)
  local sp = g.spec
  local precision = opts.precision or sp.fabric.precision
  local ty = TYPES[precision]
  if not ty then
    if opts.precision then   -- from the command line, not the spec
      diag.fatal(nil, string.format("--precision=%s is not supported by the C backend yet (supported: 32-true, 64-true)", precision))
    end
    diag.fatal(sp.fabric.where, string.format("precision '%s' is not supported by the C backend yet (supported: 32-true, 64-true; loom build --precision=32-true overrides the spec)", precision))
  end
  -- what the spec asks for that this backend does not do yet is said once, not ignored
  local f = sp.fabric
  if (f.strategy ~= "auto" and f.strategy) or (f.devices ~= "auto" and f.devices ~= 1) or f.num_nodes ~= 1 then
    io.stderr:write(string.format("%s:%d: note: strategy '%s' on %s device(s) is not implemented yet; the program trains in one process\n",
      f.where and f.where.file or sp.file, f.where and f.where.line or 1, f.strategy, tostring(f.devices)))
  end
  local trace = g.loss
  if not trace then
    diag.fatal(sp.model_where, "the spec has no train { ... } with a loss, so there is no training step to generate")
  end
  check_supported(trace)
  local batch_max = opts.batch_size or sp.train.batch_size
  local autodiff = require "autodiff"
  local ad = autodiff.differentiate(trace)
  local st = plan_mod.state(g)
  local p = plan_mod.activations(trace, ad, batch_max)

  -- forward
  local ef = context(g, st, p, ty, nil)
  ef.grad = function() return "NULL" end
  local fwd = {}
  for _, node in ipairs(trace.nodes) do
    local rule = ops_cpu[node.op]
    fwd[#fwd + 1] = ""
    fwd[#fwd + 1] = node_comment(g, node)
    fwd[#fwd + 1] = shapes_comment(node)
    if rule.alias then
      fwd[#fwd + 1] = string.format("    // (a view of its input: no copy)")
    else
      for _, l in ipairs(indent(rule.forward(ef, node))) do fwd[#fwd + 1] = l end
    end
  end
  local loss = trace.outputs[1]
  local loss_ptr = ef.ptr(loss)
  local uses_training = false
  for _, l in ipairs(fwd) do if l:find("training") then uses_training = true end end
  if not uses_training then table.insert(ef.decls, "    (void)training;   // no op of this model behaves differently in training") end

  -- backward
  local eb = context(g, st, p, ty, ad)
  local bwd = {}
  for _, node in ipairs(ad.backward) do
    local rule = ops_cpu[node.op]
    if not rule.alias then
      bwd[#bwd + 1] = ""
      bwd[#bwd + 1] = node_comment(g, node) .. "  (backward)"
      for _, l in ipairs(indent(rule.backward(eb, node))) do bwd[#bwd + 1] = l end
    end
  end
  local dloss_ptr = eb.grad(loss)
  local bwd_text = table.concat(bwd, "\n")
  if bwd_text:find("training") then table.insert(eb.decls, "    const int training = 1;") end
  if not bwd_text:find("batch") and not table.concat(eb.decls, "\n"):find("batch") then
    table.insert(eb.decls, "    (void)batch;")
  end
  if not bwd_text:find("%f[%w]B%f[^%w]") and not table.concat(eb.decls, "\n"):find("%f[%w]B%f[^%w]") then
    table.insert(eb.decls, "    (void)B;")
  end

  -- metrics
  local em = context(g, st, p, ty, nil, true)
  local loss_node = loss.node
  local mbody = metrics_body(em, loss_node)
  local has_accuracy = mbody ~= nil
  if not mbody then mbody = "    (void)m; (void)batch; (void)B;\n    *correct = 0;\n    *count = 0;"
  else
    mbody = table.concat(em.decls, "\n") .. "\n" .. mbody
    if not mbody:find("batch") then mbody = "    (void)batch;\n" .. mbody end
  end

  -- scratch: the largest any op needs (some depend on the thread count)
  local es = context(g, st, p, ty, nil)
  local sl = {}
  for _, node in ipairs(p.scratch_nodes) do sl[#sl + 1] = "    " .. ops_cpu[node.op].scratch(es, node) end
  local scratch_body = #sl > 0 and table.concat(sl, "\n") or "    // no op needs scratch space"

  -- the batch: every field of the data source
  local fields = require("graph").data_fields(sp)
  local bfields, binfo, bswitch = {}, {}, {}
  for i, f in ipairs(fields) do
    local per = util.numel(f.shape)
    local ct = f.dtype == "int64" and "int64_t" or "real"
    bfields[#bfields + 1] = string.format("    %s *%s;   // (B%s)", ct, cname(f.name),
      #f.shape > 0 and (", " .. table.concat(f.shape, ", ")) or "")
    local high = 0
    if f.decl and f.decl.dist == "randint" then high = f.decl.high end
    if sp.train.data.kind == "FashionMNIST" and f.name == "label" then high = 10 end
    binfo[#binfo + 1] = string.format("    {\"%s\", %d, %d, %d},", f.name, f.dtype == "int64" and 1 or 0, per, high)
    bswitch[#bswitch + 1] = string.format("    case %d: return b->%s;", i - 1, cname(f.name))
  end

  local loss_desc = string.format("%s", loss_node and loss_node.op or "loss")
  local values = {
    model_name = g.model_rec.class, spec_file = sp.file, precision = precision, ctype = ty.ctype,
    precision_summary = "every tensor is `real` = " .. ty.ctype,
    state_ctype = ty.ctype, state_format = ty.sfx, state_is_real = 1, loss_scaling = 0,
    act_bytes = p.nacts * (ty.ctype == "double" and 8 or 4), dact_bytes = p.ngrads * (ty.ctype == "double" and 8 or 4),
    num_wide = 1,
    spec_hash = opts.spec_hash or "", batch_max = batch_max,
    num_params = st.nparams, num_buffers = st.nbuffers, num_counters = #st.counters,
    num_ints = p.nint,
    num_param_tensors = #st.params, num_buffer_tensors = #st.buffers, num_counter_tensors = #st.counters,
    batch_fields = table.concat(bfields, "\n"), num_batch_fields = #fields, loss_desc = loss_desc,
    has_accuracy = has_accuracy and 1 or 0,
  }
  local files = {}
  files["model.h"] = template.fill("templates/c/model.h.in", values)
  files["model.c"] = template.fill("templates/c/model.c.in", {
    model_name = g.model_rec.class, spec_file = sp.file,
    param_info = tensor_info_rows(st.params), buffer_info = tensor_info_rows(st.buffers),
    counter_info = tensor_info_rows(st.counters),
    batch_info = table.concat(binfo, "\n"), batch_switch = table.concat(bswitch, "\n"),
    init_body = init_lines(st),
    forward_decls = table.concat(ef.decls, "\n"), forward_body = table.concat(fwd, "\n"), loss_ptr = loss_ptr,
    backward_decls = table.concat(eb.decls, "\n"), backward_body = bwd_text, dloss_ptr = dloss_ptr,
    metrics_body = mbody, scratch_body = scratch_body,
  })
  return files, { state = st, plan = p, autodiff = ad, types = ty, precision = precision, batch_max = batch_max,
                  fields = fields, has_accuracy = has_accuracy }
end

return emit
