-- emit_export_cuda: the exported library on an NVIDIA GPU (`loom export
-- --accelerator=cuda`).  Consumes the lowered table of an inference program on the CUDA
-- backend (gen/pipeline.lua with target.inference: the forward trace, the CUDA plan and
-- fuse groups, no autodiff) and writes, from templates/export/:
--   NAME.h         the API: the CPU library's header (the same functions, shapes, dtypes)
--   NAME.cu        the forward (gen/emit_cuda.lua's launches, in eval mode), weights from
--                  safetensors copied to the device at open, errors as values
--                  (runtime/loom_cuda.cu's failures come back through lc_recover)
--   NAME_cli.c     the CLI (the CPU library's: .npy in and out, --check, --bench)
--   kernels/       each NVRTC kernel's source (the library carries its own copies)
--   build.ninja    libNAME.a, libNAME.so (only the API visible), the CLI; nvcc -Werror
-- with the runtime files the library needs (loom_cuda.cu, nvrtc_cache.c, ckpt.c,
-- scalar_ops.h; the CLI: npy.c and data.c, which needs idx.c and tokens.c).
local util = require "util"
local template = require "template"
local emit_cuda = require "emit_cuda"
local emit_export = require "emit_export"

local emit = {}

local RUNTIME = { "runtime/loom_cuda.cu", "runtime/loom_cuda.h", "runtime/nvrtc_cache.c", "runtime/nvrtc_cache.h",
                  "runtime/ckpt.c", "runtime/ckpt.h", "runtime/sbuf.h", "runtime/philox.h", "templates/common/scalar_ops.h",
                  "runtime/npy.c", "runtime/data.c", "runtime/idx.c", "runtime/tokens.c", "runtime/data.h", "runtime/data_internal.h" }
-- cudart (static), cuBLASLt; NVRTC and the driver are opened at run time (dlopen)
local LINK = "-lcublasLt -lcudart_static -lz -lpthread -ldl -lrt -lm -lstdc++"
local CKPT_DTYPE = { f32 = "CKPT_F32", bf16 = "CKPT_BF16", f16 = "CKPT_F16" }

-- What the CUDA library cannot be made of, said before any work: the forward's results
-- (as the CPU library's), a precision or an op the CUDA backend lacks, more than one device.
function emit.check(g, target)
  emit_export.check_forward(g)
  emit_cuda.check_inference(g, target)
end

function emit.program(l)
  local g, sp = l.graph, l.spec
  local name = l.options.export_name
  local upper = name:upper()
  local prec = require "precision"
  local st, p = l.state, l.plan
  local FMT = emit_cuda.FMT
  local kernels = { list = {}, by_name = {} }
  local scratch = { max = 256 }
  local e = emit_cuda.context(l, kernels, scratch)
  e.fz = l.fuse
  local fwd = emit_cuda.forward_code(l, e)

  local io = emit_export.interface(l, "float", 0, upper)
  -- the outputs: each converted to float32 in d_out[i] (from its storage format and view)
  local out_body = {}
  for i = 1, l.trace.outputs.n do
    local t = l.trace.outputs[i]
    e.begin(nil)
    local per = util.numel(t.shape) // 1   -- (the shape's first dim is B: numel counts it as 1)
    local count = string.format("(long long)B * %d", per)
    local dst = { ptr = string.format("(void *)m->d_out[%d]", i - 1), S = "f32", V = "f32" }
    local ops = { { "src", e.val(t), "r" }, { "dst", dst, "w" } }
    local k = e.kernel { kind = "stage", ops = ops, params = "long long n",
      body = "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) st_dst(i, ld_src(i));" }
    out_body[#out_body + 1] = string.format("    // %s", io.out_names[i])
    for _, line in ipairs(e.launch(k, ops, { { "long long", count } }, { grid = count })) do out_body[#out_body + 1] = "    " .. line end
  end
  e.begin(nil)
  local compute_upload = emit_cuda.compute_copy_code(e)

  -- the inputs: device arrays of BATCH_MAX samples, pinned staging, the copy of B samples
  local b = require("host_c").batch_tables(l.fields, "float")
  local alloc_io, free_io, copy_in = {}, {}, {}
  for i, f in ipairs(l.fields) do
    local id, ct = util.c_ident(f.name), f.dtype == "int64" and "int64_t" or "float"
    local bytes = string.format("sizeof(%s) * %d", ct, util.numel(f.shape))
    alloc_io[#alloc_io + 1] = string.format("    LC_CHECK(cudaMalloc((void **)&m->dev.%s, %s * BATCH_MAX));", id, bytes)
    alloc_io[#alloc_io + 1] = string.format("    LC_CHECK(cudaMallocHost((void **)&m->h_in[%d], %s * BATCH_MAX));", i - 1, bytes)
    free_io[#free_io + 1] = string.format("    cudaFree(m->dev.%s); cudaFreeHost(m->h_in[%d]);", id, i - 1)
    copy_in[#copy_in + 1] = string.format("    memcpy(m->h_in[%d], j->in[%d], %s * (size_t)B);\n" ..
      "    LC_CHECK(cudaMemcpyAsync(m->dev.%s, m->h_in[%d], %s * (size_t)B, cudaMemcpyHostToDevice, STREAM(m->stream)));",
      i - 1, i - 1, bytes, id, i - 1, bytes)
  end
  for i = 1, l.trace.outputs.n do
    local bytes = string.format("sizeof(float) * %d * BATCH_MAX", util.numel(l.trace.outputs[i].shape))
    alloc_io[#alloc_io + 1] = string.format("    LC_CHECK(cudaMalloc((void **)&m->d_out[%d], %s));", i - 1, bytes)
    alloc_io[#alloc_io + 1] = string.format("    LC_CHECK(cudaMallocHost((void **)&m->h_out[%d], %s));", i - 1, bytes)
    free_io[#free_io + 1] = string.format("    cudaFree(m->d_out[%d]); cudaFreeHost(m->h_out[%d]);", i - 1, i - 1)
  end

  local state_fmt = l.settings.state
  local pre = emit_cuda.prelude(state_fmt, prec.optimizer_format(l.settings))
  local tf32, matmul_precision = emit_cuda.tf32_of(sp)
  local cf = e.compute.fmt
  local values, with = emit_export.template_values(l)
  local files = {}
  files[name .. ".h"] = template.fill("templates/export/lib.h.in", with {
    example_args = table.concat(io.example, ", "), link_libs = "the CUDA runtime and cuBLASLt (" .. LINK .. ")",
    threads_doc = "one opened model may be used\n// by any number of threads (the calls take turns on the device: one lock in the library).\n// A model runs on the CUDA device current when it was opened (cudaSetDevice before\n// " .. name .. "_open picks another)",
    kernel_failure = "a CUDA, cuBLASLt or NVRTC error, or no CUDA device",
    num_inputs = #l.fields, num_outputs = l.trace.outputs.n,
    input_doc = table.concat(io.in_doc, "\n"), output_doc = table.concat(io.out_doc, "\n"),
    per_sample_defines = table.concat(io.defines, "\n"), forward_params = table.concat(io.params, ", "),
  }, true, { generate = "" })
  files[name .. ".cu"] = template.fill("templates/export/lib.cu.in", with {
    precision_summary = prec.summary(l.pp), state_ctype = FMT[state_fmt].host, state_format = state_fmt,
    state_dtype = CKPT_DTYPE[state_fmt],
    num_params = st.nparams, num_buffers = st.nbuffers, num_counters = #st.counters,
    act_bytes = p.nacts, num_ints = p.nint, scratch_bytes = scratch.max, num_kernels = #kernels.list,
    compute_copy = cf and 1 or 0, compute_format = cf or "none", tf32 = tf32, matmul_precision = matmul_precision,
    param_info = require("host_c").tensor_info_rows(st.params), buffer_info = require("host_c").tensor_info_rows(st.buffers),
    counter_info = require("host_c").tensor_info_rows(st.counters),
    num_param_tensors = #st.params, num_buffer_tensors = #st.buffers, num_counter_tensors = #st.counters,
    kernel_prelude = emit_cuda.quote(pre), kernel_sources = table.concat(emit_cuda.kernel_sources(kernels), "\n"),
    batch_fields = table.concat(b.fields, "\n"), forward_body = table.concat(fwd, "\n"), output_body = table.concat(out_body, "\n"),
    alloc_io = table.concat(alloc_io, "\n"), free_io = table.concat(free_io, "\n"), copy_in = table.concat(copy_in, "\n"),
    compute_upload = compute_upload,
    input_descs = table.concat(io.in_desc, "\n"), output_descs = table.concat(io.out_desc, "\n"),
    forward_params = table.concat(io.params, ", "), input_names = table.concat(io.names, ", "),
    output_names = table.concat(io.out_names, ", "),
  }, true, { api = template.source("templates/export/api.inc") })
  files[name .. "_cli.c"] = template.fill("templates/export/cli.c.in", with { generate_usage = "" }, true,
    { generate_cli = "", generate_dispatch = "" })
  for _, k in ipairs(kernels.list) do files["kernels/" .. k.name .. ".cu"] = k.src end
  files["kernels/" .. emit_cuda.PRELUDE_NAME] = pre
  for _, path in ipairs(RUNTIME) do files[path:match("([^/]+)$")] = template.source(path) end
  local o = l.options
  files["build.ninja"] = template.fill("templates/export/build_cuda.ninja.in", with({
    cuda_home = emit_cuda.cuda_home() or "/usr/local/cuda",
    archs = "-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90",
    opt_flags = o.debug and "-O0 -g" or "-O2", link_flags = LINK, extra_cflags = o.extra_cflags, extra_ldflags = o.extra_ldflags,
  }), true)
  return { files = files, counted = { kernels = kernels.list, scratch = scratch.max, compute_format = cf } }
end

return emit
