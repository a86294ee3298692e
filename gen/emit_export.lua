-- emit_export: the inference library and CLI (`loom export`).  Consumes the lowered
-- table of an inference program (gen/pipeline.lua with target.inference: the model's
-- forward trace, no autodiff) and writes, from templates/export/:
--   NAME.h         the API (C and C++), the inputs' and outputs' shapes and dtypes
--   NAME.c         the forward (the C backend's kernel calls, gen/kernels_c.lua, in eval
--                  mode), weights from safetensors, a workspace per concurrent call
--   NAME_cli.c     the CLI: .npy inputs -> .npy outputs, --check, --bench
--   build.ninja    libNAME.a, libNAME.so (only the API visible), the CLI
-- with the kernels and the runtime files the library needs (ckpt.c; the CLI: npy.c and
-- data.c, which needs idx.c and tokens.c).
local util = require "util"
local diag = require "diag"
local ops_cpu = require "ops_cpu"
local template = require "template"
local kernels_c = require "kernels_c"
local host_c = require "host_c"
local tensor = require "tensor"

local emit = {}

-- What the library compiles with, beside its own files
local RUNTIME = { "runtime/ckpt.c", "runtime/ckpt.h", "runtime/sbuf.h", "runtime/philox.h",
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
  if sp.fabric.detect_anomaly then   -- said, not silently dropped: a library returns errors, it never stops the host
    io.stderr:write(string.format("%s:%d: note: detect_anomaly is the training program's; an exported library has no NaN/Inf checks\n",
      sp.fabric.where.file, sp.fabric.where.line))
  end
  local t = g.traces.forward
  if t.outputs.n == 0 then diag.fatal(sp.model_where, "forward returns nothing: there is nothing to export") end
  -- the library's entry point is forward: another declared method is said, not dropped silently
  for _, name in ipairs(g.order) do
    if name ~= "forward" then
      local info = debug.getinfo(g.model_rec.methods[name], "S")
      local line = info and info.linedefined > 0 and info.linedefined or (sp.model_where and sp.model_where.line) or 1
      io.stderr:write(string.format("%s:%d: note: model method '%s' is not exported (the library's entry point is forward)\n",
        sp.file, line, name))
    end
  end
  for i = 1, t.outputs.n do
    local v = t.outputs[i]
    if not tensor.is(v) or v.dtype ~= "float" then
      diag.fatal(sp.model_where, string.format("forward's result %d is %s; loom export writes float tensors only", i,
        tensor.is(v) and ("an " .. v.dtype .. " tensor") or "not a tensor (a table of tensors: return them one by one)"))
    end
  end
  for _, node in ipairs(t.nodes) do
    if not ops_cpu[node.op] then diag.error(node.where, string.format("%s is not supported by the C backend yet", node.op)) end
  end
  diag.check()
end

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
  local out_doc, out_desc, out_params, out_names, out_args, out_body = {}, {}, {}, {}, {}, {}
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
    for _, x in ipairs(host_c.indent(w.outputs[i].lines)) do out_body[#out_body + 1] = x end
  end

  local sl = kernels_c.scratch_lines(l)
  local values = {
    name = name, upper = upper, model_name = g.model_rec.class, spec_file = sp.file, precision = l.precision,
    max_batch = l.batch_max,
  }
  local function with(extra)
    local v = {}
    for k, x in pairs(values) do v[k] = x end
    for k, x in pairs(extra) do v[k] = x end
    return v
  end
  local files = {}
  files[name .. ".h"] = template.fill("templates/export/lib.h.in", with {
    example_args = table.concat(example, ", "), link_libs = LINK:gsub(" %-fopenmp", " and OpenMP (-fopenmp)"),
    num_inputs = #l.fields, num_outputs = trace.outputs.n,
    input_doc = table.concat(in_doc, "\n"), output_doc = table.concat(out_doc, "\n"),
    per_sample_defines = table.concat(defines, "\n"), forward_params = table.concat(params, ", "),
  })
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
  })
  files[name .. "_cli.c"] = template.fill("templates/export/cli.c.in", values, true)
  local loomc = require "loomc"
  for _, path in ipairs(RUNTIME) do files[path:match("([^/]+)$")] = template.source(path) end
  for _, path in ipairs(loomc.embedded_list("templates/cpu/")) do files[path:match("([^/]+)$")] = template.source(path) end
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
