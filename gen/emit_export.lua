-- emit_export: the inference library and CLI (`loom export`).  Consumes the lowered
-- table of an inference program (gen/pipeline.lua with target.inference: the model's
-- forward trace, no autodiff) and writes, from templates/export/:
--   NAME.h         the API (C and C++), the inputs' and outputs' shapes and dtypes
--   NAME.c         the forward (the C backend's kernel calls, gen/kernels_c.lua, in eval
--                  mode), weights from safetensors, a workspace per concurrent call
--   NAME_cli.c     the CLI: .npy inputs -> .npy outputs, --check, --bench
--   build.ninja    libNAME.a, libNAME.so (only the API visible), the CLI
-- with the kernels and the runtime files the library needs (ckpt.c, sample.c: a sampling
-- method's draws; the CLI: npy.c and data.c, which needs idx.c and tokens.c).
local util = require "util"
local diag = require "diag"
local ops_cpu = require "ops_cpu"
local template = require "template"
local kernels_c = require "kernels_c"
local host_c = require "host_c"
local tensor = require "tensor"

local emit = {}

-- What the library compiles with, beside its own files
local RUNTIME = { "runtime/ckpt.c", "runtime/ckpt.h", "runtime/sbuf.h", "runtime/philox.h", "runtime/sample.c", "runtime/sample.h",
                  "runtime/npy.c", "runtime/data.c", "runtime/idx.c", "runtime/tokens.c", "runtime/data.h", "runtime/data_internal.h" }
local LINK = "-ldnnl -lopenblas -lz -lpthread -lm -fopenmp"
local CKPT_DTYPE = { f32 = "CKPT_F32", f64 = "CKPT_F64", bf16 = "CKPT_BF16", f16 = "CKPT_F16" }

-- What an exported library cannot be made of, said before any work: its precision, a
-- forward whose results are not float tensors, an op the C backend lacks.
function emit.check(g, target)
  local sp = g.spec
  local precision = target.precision or sp.fabric.precision
  if not require("precision").SETTINGS[precision] then
    if target.precision then diag.fatal(nil, string.format("--precision=%s is not supported by loom export", precision)) end
    diag.fatal(sp.fabric.where, string.format("precision '%s' is not supported by loom export", precision))
  end
  emit.check_forward(g)
  for _, node in ipairs(g.traces.forward.nodes) do
    if not ops_cpu[node.op] then diag.error(node.where, string.format("%s is not supported by the C backend yet", node.op)) end
  end
  diag.check()
end

-- What either library (CPU or CUDA) needs of the model's forward: results that are float
-- tensors with the batch first; the methods the training step calls and detect_anomaly
-- said in a note (not dropped silently)
function emit.check_forward(g)
  local sp = g.spec
  if sp.fabric.detect_anomaly then   -- said, not silently dropped: a library returns errors, it never stops the host
    io.stderr:write(string.format("%s:%d: note: detect_anomaly is the training program's; an exported library has no NaN/Inf checks\n",
      sp.fabric.where.file, sp.fabric.where.line))
  end
  local t = g.traces.forward
  if t.outputs.n == 0 then diag.fatal(sp.model_where, "forward returns nothing: there is nothing to export") end
  -- a sampling method is exported as NAME_<method> (gen/entries.lua refuses, in one line,
  -- any other method and one it cannot run); a method the loss calls is part of
  -- forward's trace there, not an entry point: said, not dropped silently
  for _, name in ipairs(g.order) do
    if name ~= "forward" and g.called[name] then
      local info = debug.getinfo(g.model_rec.methods[name], "S")
      local line = info and info.linedefined > 0 and info.linedefined or (sp.model_where and sp.model_where.line) or 1
      io.stderr:write(string.format("%s:%d: note: model method '%s' is called by the training step; the library's entry points are forward and a sampling method\n",
        sp.file, line, name))
    end
  end
  for i = 1, t.outputs.n do
    local v = t.outputs[i]
    if not tensor.is(v) or v.dtype ~= "float" then
      diag.fatal(sp.model_where, string.format("forward's result %d is %s; loom export writes float tensors only", i,
        tensor.is(v) and ("an " .. v.dtype .. " tensor") or "not a tensor (a table of tensors: return them one by one)"))
    end
    -- (the library's outputs are per sample: an LSTM's h_n, (layers, B, H), is returned transposed)
    if v.shape[1] ~= "B" then
      local d = require("ops").batch_dim_inside(v.shape)
      diag.fatal(sp.model_where, string.format("forward's result %d %s has %s; loom export writes batch-first outputs%s", i,
        util.shape_str(v.shape), d and ("the batch dimension at dim " .. d) or "no batch dimension",
        d and string.format(" (return transpose(x, 0, %d))", d) or ""))
    end
  end
end

-- A sampling method (gen/entries.lua: a method returning autoregress(...)) as
-- NAME_<method> in the header, the library (the C backend's decode step,
-- gen/emit_c.lua's sample_code, and the training program's --sample loop) and the
-- CLI's --generate; empty blocks without one.
local GENERATE_H = [==[
// ${method}: the spec's sampling method (${method_where}, autoregress over ${context}
// positions, temperature ${temperature}, top_k ${top_k}), as the training program's
// --sample runs it: n tokens drawn one at a time after prompt[0..prompt_len), each a
// step of one position over a key/value cache; the window is the last ${context}
// positions and, when full, restarts at its last half.  prompt_len >= 1, each token in
// [0, ${upper}_VOCAB_IN); temperature < 0 or top_k < 0: the spec's; temperature 0 or top_k 1:
// the most likely token; seed: the draws' (the same seed, the same tokens).  Writes
// the n new tokens into tokens[0..n).  One sequence per call (no batch).
#define ${upper}_CONTEXT ${context}       // positions the model reads at most
#define ${upper}_VOCAB ${vocab}           // logits per position (top_k <= this)
#define ${upper}_VOCAB_IN ${vocab_in}     // tokens the model's embedding takes
${upper}_API int ${name}_${method}(${name}_model *model, const int64_t *prompt, int prompt_len, int n, double temperature,
                                 int top_k, uint64_t seed, int64_t *tokens, char *err, size_t err_len);

]==]

local GENERATE_C = [==[
// ---------------------------------------------------------------------------
// ${method}: sampling (the training program's --sample, templates' model_sample_step)
#include "sample.h"
static void *alloc_zeroed(size_t bytes) { return map_zeroed(bytes); }   // model_sample_begin's arena
${sample_h}
${sample_body}

int ${name}_${method}(${name}_model *model, const int64_t *prompt, int prompt_len, int n, double temperature, int top_k,
                      uint64_t seed, int64_t *tokens, char *err, size_t err_len) {
    if (!model) return fail(err, err_len, ${upper}_EARG, "${name}_${method}: model is NULL");
    if (prompt_len < 1 || !prompt) return fail(err, err_len, ${upper}_EARG, "${name}_${method}: the prompt is empty or NULL (at least one token)");
    if (n < 0 || (n > 0 && !tokens)) return fail(err, err_len, ${upper}_EARG, "${name}_${method}: n is %d and tokens %s", n, tokens ? "given" : "NULL");
    if (top_k > SAMPLE_VOCAB) return fail(err, err_len, ${upper}_EARG, "${name}_${method}: top_k %d is more than the vocabulary (%d)", top_k, SAMPLE_VOCAB);
    if (!(temperature < 0 || temperature >= 0)) return fail(err, err_len, ${upper}_EARG, "${name}_${method}: temperature is NaN");
    for (int i = 0; i < prompt_len; i++)
        if (prompt[i] < 0 || prompt[i] >= SAMPLE_VOCAB_IN)
            return fail(err, err_len, ${upper}_EARG, "${name}_${method}: prompt token %lld at %d is out of [0, %d)", (long long)prompt[i], i, SAMPLE_VOCAB_IN);
    size_t cap = (size_t)prompt_len + (size_t)n;
    int64_t *seq = (int64_t *)malloc(sizeof(int64_t) * cap);
    double *logits = (double *)malloc(sizeof(double) * SAMPLE_VOCAB), *dscratch = (double *)malloc(sizeof(double) * SAMPLE_VOCAB);
    workspace *w = seq && logits && dscratch ? workspace_take(model) : NULL;
    Model m = { model->params, model->buffers, model->counters, NULL, NULL, NULL, NULL, 0, 0, NULL, NULL };
    int rc = ${upper}_OK;
    if (w) {
        m.decode = w->decode;
        m.decode_scratch = w->decode_scratch;
        rc = model_sample_begin(&m) ? ${upper}_ENOMEM : ${upper}_OK;
        w->decode = m.decode;   // the workspace's now, kept for the next call
        w->decode_scratch = m.decode_scratch;
    }
    if (!w || rc) {
        free(seq); free(logits); free(dscratch);
        if (w) workspace_give(model, w);
        return fail(err, err_len, ${upper}_ENOMEM, "${name}_${method}: out of memory");
    }
    memcpy(seq, prompt, sizeof(int64_t) * (size_t)prompt_len);
    sampler s;
    sampler_init(&s, temperature >= 0 ? temperature : SAMPLE_TEMPERATURE, top_k >= 0 ? top_k : SAMPLE_TOP_K, seed);
    int draw = SAMPLE_VOCAB < SAMPLE_VOCAB_IN ? SAMPLE_VOCAB : SAMPLE_VOCAB_IN;   // tokens the model can read back
    size_t len = (size_t)prompt_len, start = 0, cached = 0;
    for (int i = 0; i < n; i++) {
        if (len - start > SAMPLE_CONTEXT) { start = len - (SAMPLE_CONTEXT + 1) / 2; cached = 0; }
        int cur = (int)(len - start);
        const real *lg = model_sample_step(&m, seq + start, (int)cached, cur);
        cached = (size_t)cur;
        for (int v = 0; v < draw; v++) logits[v] = (double)lg[v];
        seq[len++] = tokens[i] = sampler_pick(&s, logits, draw, dscratch);
    }
    workspace_give(model, w);
    free(seq); free(logits); free(dscratch);
    return ${upper}_OK;
}

]==]

local GENERATE_CLI = [==[
// --generate N [--prompt TEXT] [--temperature X] [--top-k K] [--seed S]: ${name}_${method}'s
// N tokens after the prompt (bytes, as the training program's --sample prints them)
static int generate_cli(int argc, char **argv) {
    const char *weights = NULL, *prompt = "\n";
    long long n = -1, top_k = -1;
    double temperature = -1;
    unsigned long long seed = ${default_seed};   // the spec's train.seed, the training program's default
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) die("%s needs a value (--help for usage)%s", a, "");
        const char *v = argv[++i];
        char *end;
        if (!strcmp(a, "--weights")) weights = v;
        else if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--generate")) { n = strtoll(v, &end, 10); if (*end || n < 0 || n > 100000000) die("--generate takes a count of tokens, not '%s'%s", v, ""); }
        else if (!strcmp(a, "--top-k")) { top_k = strtoll(v, &end, 10); if (*end || top_k < 0 || top_k > ${upper}_VOCAB) die("--top-k takes a count in [0, vocabulary], not '%s'%s", v, ""); }
        else if (!strcmp(a, "--seed")) { seed = strtoull(v, &end, 10); if (*end || v[0] == '-') die("--seed takes a non-negative integer, not '%s'%s", v, ""); }
        else if (!strcmp(a, "--temperature")) { temperature = strtod(v, &end); if (*end || !(temperature >= 0)) die("--temperature takes a number >= 0, not '%s'%s", v, ""); }
        else die("'%s' does not go with --generate (--help for usage)%s", a, "");
    }
    size_t np = strlen(prompt);
    if (!np) prompt = "\n", np = 1;   // as the training program's --sample
    int64_t *p = (int64_t *)malloc(sizeof(int64_t) * np), *out = (int64_t *)malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (!p || !out) die("out of memory%s%s", "", "");
    for (size_t i = 0; i < np; i++) p[i] = (unsigned char)prompt[i];
    char *wdefault = weights ? NULL : default_weights(argv[0]);
    ${name}_model *m = open_model(weights ? weights : wdefault);
    char err[${upper}_ERR_LEN];
    if (${name}_${method}(m, p, (int)np, (int)n, temperature, (int)top_k, (uint64_t)seed, out, err, sizeof err)) die("%s%s", err, "");
    fwrite(prompt, 1, np, stdout);
    for (long long i = 0; i < n; i++) {
        if (${upper}_VOCAB_IN <= 256) putchar((int)out[i]); else printf("%s%lld", i ? " " : "", (long long)out[i]);
    }
    printf("\n");
    ${name}_close(m);
    free(p); free(out); free(wdefault);
    return 0;
}

]==]
local GENERATE_DISPATCH = [==[
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--generate")) return generate_cli(argc, argv);
]==]

-- "(B, 1, 28, 28)" for a per-sample shape
local function batched_str(shape)
  local parts = { "B" }
  for _, d in ipairs(shape) do parts[#parts + 1] = tostring(d) end
  return "(" .. table.concat(parts, ", ") .. ")"
end

-- a desc row of NAME.c (name, dtype code, per-sample shape, elements, high)
local function desc_row(name, dt, shape, high)
  local dims = {}
  for i, d in ipairs(shape) do dims[i] = tostring(d) end
  return string.format("    { %s, %d, %d, { %s }, %d, %d },", util.c_string(name), dt, #shape,
    #dims > 0 and table.concat(dims, ", ") or "0", util.numel(shape), high or 0)
end

-- The API's inputs (the model's, in the spec's order) and outputs (forward's results, in
-- order; named "output" (one) or "output0", "output1", ...) as the header, the library and
-- the CLI write them, for both libraries (CPU and CUDA): `float_c` the float arrays' C
-- type, `float_dt` its desc code.  Returns lists of lines and names: in_doc, in_desc,
-- bind, fields, params, names, defines, example, out_doc, out_desc, out_params,
-- out_names, out_args.
function emit.interface(l, float_c, float_dt, upper)
  -- inputs: the model's, in the spec's order
  local in_doc, in_desc, bind, fields, params, names, defines, example = {}, {}, {}, {}, {}, {}, {}, {}
  for i, f in ipairs(l.fields) do
    local id = util.c_ident(f.name)
    local is_int = f.dtype == "int64"
    local ct = is_int and "int64_t" or float_c
    in_doc[#in_doc + 1] = string.format("//   %-12s %s %s%s", f.name, is_int and "int64" or (float_c == "float" and "float32" or "float64"),
      batched_str(f.shape), f.high > 0 and string.format(", values in [0, %d)", f.high) or "")
    in_desc[#in_desc + 1] = desc_row(f.name, is_int and 2 or float_dt, f.shape, f.high)
    fields[#fields + 1] = string.format("    const %s *%s;   // %s", is_int and "int64_t" or "real", id, batched_str(f.shape))
    bind[#bind + 1] = string.format("    batch.%s = (const %s *)in[%d];", id, is_int and "int64_t" or "real", i - 1)
    params[#params + 1] = string.format("const %s *%s", ct, id)
    names[#names + 1] = id
    example[#example + 1] = id
    defines[#defines + 1] = string.format("#define %s_%s_PER_SAMPLE %d   // elements of input '%s' per sample", upper, id:upper(),
      util.numel(f.shape), util.c_comment(f.name))
  end
  -- outputs: forward's results, in order; named "output" (one) or "output0", "output1", ...
  local out_doc, out_desc, out_params, out_names, out_args = {}, {}, {}, {}, {}
  local trace = l.trace
  for i = 1, trace.outputs.n do
    local t = trace.outputs[i]
    local per = {}
    for j = 2, #t.shape do per[#per + 1] = t.shape[j] end
    assert(t.shape[1] == "B", "an output without the batch dimension")
    local oname = trace.outputs.n == 1 and "output" or ("output" .. (i - 1))
    out_doc[#out_doc + 1] = string.format("//   %-12s %s %s", oname, float_c == "float" and "float32" or "float64", batched_str(per))
    out_desc[#out_desc + 1] = desc_row(oname, float_dt, per, 0)
    params[#params + 1] = string.format("%s *%s", float_c, oname)
    out_params[#out_params + 1] = string.format("real *out%d", i - 1)
    out_names[#out_names + 1] = oname
    out_args[#out_args + 1] = string.format("(real *)out[%d]", i - 1)
    example[#example + 1] = oname
    defines[#defines + 1] = string.format("#define %s_%s_PER_SAMPLE %d   // elements of output '%s' per sample", upper, oname:upper(),
      util.numel(per), oname)
  end
  return { in_doc = in_doc, in_desc = in_desc, bind = bind, fields = fields, params = params, names = names, defines = defines,
           example = example, out_doc = out_doc, out_desc = out_desc, out_params = out_params, out_names = out_names, out_args = out_args }
end

-- The values every export template takes (the library's name, model, spec, precision,
-- batch bound), with `more` added; and with(extra): a copy of them with extra's added,
-- for one template.  Shared by the CPU library and the CUDA one (gen/emit_export_cuda.lua).
function emit.template_values(l, more)
  local name = l.options.export_name
  local values = {
    name = name, upper = name:upper(), model_name = l.graph.model_rec.class, spec_file = l.spec.file,
    precision = l.precision, max_batch = l.batch_max,
  }
  for k, x in pairs(more or {}) do values[k] = x end
  local function with(extra)
    local v = {}
    for k, x in pairs(values) do v[k] = x end
    for k, x in pairs(extra) do v[k] = x end
    return v
  end
  return values, with
end

-- The library's files for the lowered inference table `l`; target.export_name (a C
-- identifier), l.options' march, debug and extra flags.  Returns { files, counted }.
function emit.program(l)
  local g, sp = l.graph, l.spec
  local name = l.options.export_name
  local upper = name:upper()
  local prec = require "precision"
  local settings = l.settings
  local ty = kernels_c.TYPES[settings.compute]
  local float_dt = settings.compute == "f64" and 1 or 0
  local float_c = settings.compute == "f64" and "double" or "float"
  local st, p = l.state, l.plan

  local w = kernels_c.walk(l)
  local ef = w.ef
  local fwd = require("emit_c").forward_lines(g, w)

  -- the API's inputs and outputs
  local io = emit.interface(l, float_c, float_dt, upper)
  local out_body = {}
  for i = 1, l.trace.outputs.n do
    for _, x in ipairs(host_c.indent(w.outputs[i].lines)) do out_body[#out_body + 1] = x end
  end
  local in_doc, in_desc, bind, fields, params, names, defines, example = io.in_doc, io.in_desc, io.bind, io.fields, io.params,
    io.names, io.defines, io.example
  local out_doc, out_desc, out_params, out_names, out_args = io.out_doc, io.out_desc, io.out_params, io.out_names, io.out_args
  local trace = l.trace

  -- the sampling method, when there is one the library can run
  local e = l.entries and l.entries[1]
  if e and e.refused then e = nil end
  local blocks = { generate = "", api = template.source("templates/export/api.inc") }
  local gen_values = { decode_arena = 0, decode_scratch = 0, generate_usage = "" }
  local cli_blocks = { generate_cli = "", generate_dispatch = "" }
  if e then
    local sample = require("emit_c").sample_code(l)
    blocks.generate = GENERATE_C
    cli_blocks = { generate_cli = GENERATE_CLI, generate_dispatch = GENERATE_DISPATCH }
    gen_values = {
      decode_arena = e.size, decode_scratch = e.scratch, sample_h = sample.sample_h, sample_body = sample.sample_body,
      method = e.name, method_where = string.format("%s:%d", e.where.file, e.where.line), context = e.context,
      vocab = e.vocab, vocab_in = e.vocab_in, default_seed = sp.train and sp.train.seed or 42, temperature = util.c_float(e.temperature, ""), top_k = e.top_k,
      generate_usage = string.format("       %s [--weights FILE] --generate N [--prompt TEXT] [--temperature X] [--top-k K] [--seed S]\n"
        .. "                 %s_%s: N tokens after the prompt (bytes), as the training program's --sample (seed %d)\n",
        name, name, e.name, sp.train and sp.train.seed or 42),
    }
  end
  local sl = kernels_c.scratch_lines(l)
  local values, with = emit.template_values(l, gen_values)
  local files = {}
  files[name .. ".h"] = template.fill("templates/export/lib.h.in", with {
    example_args = table.concat(example, ", "), link_libs = LINK:gsub(" %-fopenmp", " and OpenMP (-fopenmp)"),
    threads_doc = "one opened model may be used\n// by any number of threads at once (each call runs on a workspace of its own, kept for\n// the next call)",
    kernel_failure = "oneDNN refused a product",
    num_inputs = #l.fields, num_outputs = trace.outputs.n,
    input_doc = table.concat(in_doc, "\n"), output_doc = table.concat(out_doc, "\n"),
    per_sample_defines = table.concat(defines, "\n"), forward_params = table.concat(params, ", "),
  }, true, { generate = e and GENERATE_H or "" })
  files[name .. ".c"] = template.fill("templates/export/lib.c.in", with {
    precision_summary = prec.summary(l.pp), ctype = ty.ctype,
    state_ctype = settings.state == "bf16" and "uint16_t" or settings.state == "f16" and "_Float16"
      or prec.FORMATS[settings.state].ctype,
    state_dtype = CKPT_DTYPE[settings.state],
    num_params = st.nparams, num_buffers = st.nbuffers, num_counters = #st.counters,
    act_bytes = p.nacts, num_ints = p.nint, num_wide = w.num_wide,
    param_info = host_c.tensor_info_rows(st.params), buffer_info = host_c.tensor_info_rows(st.buffers),
    counter_info = host_c.tensor_info_rows(st.counters),
    num_param_tensors = #st.params, num_buffer_tensors = #st.buffers, num_counter_tensors = #st.counters,
    batch_fields = table.concat(fields, "\n"),
    scratch_body = #sl > 0 and table.concat(sl, "\n") or "    // no op needs scratch space",
    output_params = table.concat(out_params, ", "),
    forward_decls = table.concat(ef.decls, "\n"), forward_body = table.concat(fwd, "\n"),
    output_body = table.concat(out_body, "\n"),
    input_descs = table.concat(in_desc, "\n"), output_descs = table.concat(out_desc, "\n"),
    bind_inputs = table.concat(bind, "\n"), output_args = table.concat(out_args, ", "),
    forward_params = table.concat(params, ", "),
    input_names = table.concat(names, ", "), output_names = table.concat(out_names, ", "),
  }, true, blocks)
  files[name .. "_cli.c"] = template.fill("templates/export/cli.c.in", values, true, cli_blocks)
  local loomc = require "loomc"
  for _, path in ipairs(RUNTIME) do files[path:match("([^/]+)$")] = template.source(path) end
  for _, path in ipairs(loomc.embedded_list("templates/cpu/")) do files[path:match("([^/]+)$")] = template.source(path) end
  for _, path in ipairs(require("emit_c").SHARED_KERNEL_FILES) do files[path:match("([^/]+)$")] = template.source(path) end
  local o = l.options
  local march = o.march or "x86-64-v2"
  files["build.ninja"] = template.fill("templates/export/build.ninja.in", with({
    target_desc = o.debug and string.format("-march=%s, a debug build (-O0 -g)", march)
      or string.format("-march=%s (loom export --march=native for this machine's CPU)", march),
    opt_flags = (o.debug and "-O0 -g" or "-O3") .. " -march=" .. march,
    link_flags = LINK, extra_cflags = o.extra_cflags, extra_ldflags = o.extra_ldflags,
  }), true)
  return { files = files, counted = kernels_c.counted({ operands = { w.operands[1], {} }, num_wide = w.num_wide }) }
end

return emit
