-- host_c: the host C code both programs share (gen/emit_c.lua's and gen/emit_cuda.lua's
-- model code): the spec line above each op, the tables of the state's tensors and of the
-- batch's fields, PyTorch's
-- default initialisation of the state (drawn on the host by both), and the accuracy of
-- a batch on the host.
local util = require "util"
local ops = require "ops"

local host_c = {}
local literal = util.c_float

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
host_c.node_comment = node_comment

local function indent(lines, pre)
  local out = {}
  for i, l in ipairs(lines) do out[i] = (pre or "    ") .. l end
  return out
end
host_c.indent = indent

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
host_c.tensor_info_rows = tensor_info_rows

-- The batch's fields (l.fields) as model.h's Batch members (floats as `float_ctype`),
-- model.c's field table and its switch from a field's index to its pointer
function host_c.batch_tables(fields, float_ctype)
  local members, info, switch = {}, {}, {}
  for i, f in ipairs(fields) do
    local ct = f.dtype == "int64" and "int64_t" or float_ctype
    members[i] = string.format("    %s *%s;   // (B%s)", ct, util.c_ident(f.name), #f.shape > 0 and (", " .. table.concat(f.shape, ", ")) or "")
    info[i] = string.format("    {%s, %d, %d, %d},", util.c_string(f.name), f.dtype == "int64" and 1 or 0, util.numel(f.shape), f.high)
    switch[i] = string.format("    case %d: return b->%s;", i - 1, util.c_ident(f.name))
  end
  return { fields = members, info = info, switch = switch }
end

-- A parameter's initialisation by the spec's train.init (`d`: gen/nninit.lua's draw),
-- from Philox stream `stream` (the parameter's, as its default would be)
local function spec_init_lines(s, d, stream)
  local head = string.format("    // %s: %s  <- %s:%d%s", util.c_comment(s.name), d.call, util.c_comment(d.where.file), d.where.line,
    d.note and ("  (" .. d.note .. ")") or "")
  if d.orthogonal then
    return table.concat({ head, "    {",
      string.format("        double *q = nninit_orthogonal(%d, %d, seed, %d);", d.rows, d.cols, stream),
      string.format("        for (size_t i = 0; i < %d; i++) m->params[%d + i] = TO_STATE(%s * q[i]);", s.numel, s.offset, literal(d.gain, "")),
      "        free(q);", "    }" }, "\n")
  end
  local expr = d.expr:gsub("%f[%w_]stream%f[^%w_]", tostring(stream))
  return head .. "\n" .. string.format("    for (size_t i = 0; i < %d; i++) m->params[%d + i] = TO_STATE(%s);", s.numel, s.offset, expr)
end

-- The initialisation of the state `st` (also the CUDA program's, drawn on the host with
-- the same Philox streams): PyTorch's default, or the spec's (`inits`: the graph's
-- g.inits, by parameter name)
local function init_lines(st, inits)
  local lines = {}
  for i, s in ipairs(st.params) do
    local init = s.entry.init
    local ptr = string.format("m->params + %d", s.offset)
    local line
    if inits and inits[s.name] then
      line = spec_init_lines(s, inits[s.name], i)
    elseif init.kind == "kaiming_uniform" or init.kind == "uniform_fan_in" then
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
    if not (inits and inits[s.name]) then line = string.format("    %s   // %s", line, util.c_comment(s.name)) end
    lines[#lines + 1] = line
  end
  for _, s in ipairs(st.buffers) do
    local v = s.entry.init.kind == "ones" and 1 or 0
    lines[#lines + 1] = string.format("    init_fill(m->buffers + %d, %d, %d);   // %s", s.offset, s.numel, v, util.c_comment(s.name))
  end
  lines[#lines + 1] = "    memset(m->counters, 0, sizeof(int64_t) * NUM_COUNTERS);"
  return table.concat(lines, "\n")
end

host_c.init_lines = init_lines

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
host_c.accuracy_lines = accuracy_lines

-- "    // (B, 8), (B, 8) -> (B, 8)": the shapes an op reads (not its parameters', unless it reads only those) and makes
function host_c.shapes_comment(node)
  local ins = {}
  for _, x in ipairs(node.inputs) do
    if not x.param then ins[#ins + 1] = util.shape_str(x.shape) end
  end
  if #ins == 0 then   -- an op of parameters only (a kept cast of a weight)
    for _, x in ipairs(node.inputs) do ins[#ins + 1] = util.shape_str(x.shape) end
  end
  return string.format("    // %s -> %s", table.concat(ins, ", "), util.shape_str(node.out.shape))
end

-- The C offset of element `var` of a row-major array of `sizes` in a buffer read
-- through `strides` (0: broadcast): "var" itself when that is the same layout.
function host_c.index_expr(sizes, strides, var)
  local terms, inner, contiguous = {}, 1, true
  for k = #sizes, 1, -1 do
    local size, st = sizes[k], strides[k]
    if st ~= inner and size ~= 1 then contiguous = false end
    if st ~= 0 and size ~= 1 then
      local e = inner == 1 and var or string.format("%s / %d", var, inner)
      if k > 1 then e = string.format("(%s) %% %d", e, size) end
      terms[#terms + 1] = st == 1 and ("(" .. e .. ")") or string.format("(%s) * %d", e, st)
    end
    inner = inner * size
  end
  if contiguous then return var end
  if #terms == 0 then return "0" end
  return table.concat(terms, " + ")
end

-- What both backends' sample_code share: the macros of a program that does not sample
-- (`why`), and the step rules' context for entry point `e` (gen/ops_cpu.lua's `step`):
-- rows of the decode arena `D` (position-major), the token at position `t`
function host_c.no_sample(why)
  why = why or "the spec declares no sampling method (a method beside forward returning autoregress(...))"
  return { sample_h = string.format("#define MODEL_HAS_SAMPLE 0\n#define SAMPLE_REFUSED %s", util.c_string(why)), sample_body = "" }
end
function host_c.step_context(e)
  local s = { T = e.context, index = host_c.index_expr }
  function s.axis(t) return e.axis[t] end
  function s.R(t) return e.bufs[t].row end
  function s.rest(t) return e.bufs[t].rest end
  function s.rows(t) return string.format("(D + %d)", e.bufs[t].offset) end
  function s.row(t)
    local b = e.bufs[t]
    return string.format("(D + %d + (size_t)t * %d)", b.offset, b.row)
  end
  function s.token() return "tok[t]" end
  return s
end

-- model.h's sampling declarations for the entry point `e` (gen/entries.lua) whose decode
-- arena holds `size` reals (`copies`: parameters read in another format among them);
-- model.c's and model.cu's model_sample_step implement them
function host_c.sample_header(e, size, copies)
  local where = string.format("%s:%d", e.where.file, e.where.line)
  return table.concat({
    "#define MODEL_HAS_SAMPLE 1",
    string.format("#define SAMPLE_METHOD %s           // <- %s", util.c_string(e.name), util.c_comment(where)),
    string.format("#define SAMPLE_CONTEXT %d          // positions of the window (the model's T)", e.context),
    string.format("#define SAMPLE_VOCAB %d            // logits per position", e.vocab),
    string.format("#define SAMPLE_VOCAB_IN %d         // tokens the model's embedding takes", e.vocab_in),
    string.format("#define SAMPLE_TEMPERATURE %s      // the spec's (--temperature)", util.c_float(e.temperature, "")),
    string.format("#define SAMPLE_TOP_K %d            // the spec's, 0: every token (--top-k)", e.top_k),
    string.format("#define SAMPLE_ARENA %d            // reals: every token-dependent tensor, all positions%s", size,
      copies and ", then the parameters read in another format" or ""),
    "// The decode arena (allocated on first use, freed by model_free); 0, or -1 when out of memory.",
    "int model_sample_begin(Model *m);",
    "// Positions [from, n) of the window tok[0..n) computed into the decode arena (the",
    "// positions before `from` are the cache, computed by earlier calls for the same window);",
    "// returns position n-1's SAMPLE_VOCAB logits.  No parameter changes in between.",
    "const real *model_sample_step(Model *m, const int64_t *tok, int from, int n);",
  }, "\n")
end

return host_c
