-- emit_cuda: the CUDA backend.  Writes a host .cu (model.cu: parameters, gradients,
-- activations, optimizer state in device memory, one allocation each, laid out by
-- gen/plan.lua exactly as the C backend lays them out; GEMMs through cuBLASLt; every
-- other op an NVRTC kernel, compiled at start-up through runtime/nvrtc_cache), the
-- training loop (train.c: the C backend's loop with pinned buffers and a copy stream),
-- and a build.ninja that compiles with nvcc -Werror.
--
-- It consumes the lowered table (gen/pipeline.lua: the precision plan with its casts
-- folded into loads and stores, autodiff, the memory plan the C backend lays out the
-- same way, the fuse plan) and only writes code for it.  The loop's pieces (data,
-- checkpoints, callbacks, loggers, schedule) are gen/emit_train.lua's values, filled
-- into templates/loop/train.c.in (with this file's TRAIN_BLOCKS).
local util = require "util"
local diag = require "diag"
local template = require "template"
local ops_cuda = require "ops_cuda"
local fuse_cuda = require "fuse_cuda"
local operands = require "operands"

local emit = {}

-- the precisions this backend runs: float compute; float state, or (bf16-true, 16-true)
-- parameters, gradients and buffers in 16 bits (model.h's state_t), as the C backend
emit.PRECISIONS = { ["32-true"] = true, ["bf16-mixed"] = true, ["16-mixed"] = true, ["bf16-true"] = true, ["16-true"] = true }

local host_c = require "host_c"
local cname = util.c_ident
local node_comment, indent, init_lines = host_c.node_comment, host_c.indent, host_c.init_lines
local tensor_info_rows = host_c.tensor_info_rows

local literal = ops_cuda.literal

-- elements of a tensor of `shape` at the largest batch
local function count_at(shape, batch_max) return util.numel(shape, batch_max) end

-- ctype: in the kernels; host: in model.h (16-bit formats as their bit patterns)
local FMT = {
  f32 = { ctype = "float", host = "float", code = "f", lc = "LC_F32", bytes = 4 },
  bf16 = { ctype = "so_u16", host = "uint16_t", code = "b", lc = "LC_BF16", bytes = 2 },
  f16 = { ctype = "so_u16", host = "uint16_t", code = "h", lc = "LC_F16", bytes = 2 },
  i64 = { ctype = "long long", code = "l", bytes = 8 },
}

-- The kernels' common prelude, which each kernel #includes as "loom_prelude.h" (NVRTC
-- gets no include path: model.cu holds the text once and the runtime hands it to NVRTC
-- as a header, whose text is in the cache key, runtime/nvrtc_cache.h): scalar_ops.h,
-- the types of the state (s: parameters, gradients, buffers) and of the optimizer's
-- moments (o), and a block reduction.
local PRELUDE_NAME = "loom_prelude.h"   -- runtime/loom_cuda.h's LC_PRELUDE
local function prelude(s, o)
  local so = template.source("templates/common/scalar_ops.h")
  return so .. string.format([[

// model.h's state_t (parameters, gradients, buffers: %s) and the optimizer's moments
// (%s), widened to float where a kernel reads them and rounded where it stores them
typedef %s state_t;
#define state_widen(x) so_widen_%s(x)
#define state_narrow(x) so_narrow_%s(x)
typedef %s opt_t;
#define opt_widen(x) so_widen_%s(x)
#define opt_narrow(x) so_narrow_%s(x)
]], s, o, FMT[s].ctype, s, s, FMT[o].ctype, o, o) .. [[

// the sum of v over the block (blockDim.x <= 256, a power of two); every thread gets it
static __device__ double block_sum(double v) {
    __shared__ double sh[256];
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}
]]
end

local function fnv(s)
  local h = 2166136261
  for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
  return string.format("%08x", h)
end

-- The context of gen/ops_cuda.lua's rules: the shared operand context (gen/operands.lua)
-- with device pointers, the scratch arena, kernels (add_kernels) and GEMMs (add_gemm).
-- `kernels` ({ list, by_name }) and `scratch` ({ max }) collect what the program needs.
local DEVICE = { params = "d_params", grads = "d_grads", acts = "d_acts", dacts = "d_dacts", ints = "d_ints" }
local function device_ptr(pl) return string.format("(void *)(m->%s + %d)", DEVICE[pl.arena], pl.offset) end

local add_kernels, add_gemm
local function context(l, kernels, scratch)
  local used = 0
  local e = operands.context(l, {
    batch = "(long long)B", literal = literal, default = "f32", sizes_as_values = true,
    counter = function(offset) return string.format("(void *)(m->d_counters + %d)", offset) end,
    begin = function() used = 0 end,
  })
  -- FSDP FULL_SHARD: the units whose parameters an op's launches read (e.units_read, a set
  -- the caller gives around the op: forward_code's and backward_code's gathers)
  local place = e.place
  function e.place(t)
    local pl = place(t)
    if pl.unit and e.units_read then e.units_read[pl.unit] = true end
    return pl
  end
  -- attention as the fused kernels (gen/ops.lua's `fused`, the choice the plan's saves made)
  local sdpa = require("ops").scaled_dot_product_attention
  function e.attention_fused(n)
    return sdpa.fused(n, { backend = "cuda", gemm_attention = l.options.gemm_attention, root = l.root })
  end
  local function storage(t)
    local pl = e.place(t)
    if pl.arena == "batch" then return string.format("(void *)db->%s", cname(pl.root.input)) end
    return device_ptr(pl)
  end
  -- SyncBatchNorm: n doubles at a device pointer summed over the ranks, queued on the
  -- compute stream (runtime/ddp_nccl.h: ncclAllReduce in place)
  function e.ranks_sum(ptr, n) return string.format("ddp_nccl_sum(%s, %d, m->stream);", ptr, n) end
  function e.val(t)
    -- n: its elements at the largest batch (what a copy of it takes in scratch)
    local n = e.count_max(t.shape)
    if t.dtype ~= "float" then return { ptr = storage(t), S = "i64", V = "i64", n = n } end
    local c = e.chain(t)
    -- the output of a producer whose elementwise tail is fused into its store (gen/fuse.lua)
    local tail = e.tail and e.tail.head.out == t and e.tail or nil
    local pl = e.place(t)
    return { ptr = storage(t), S = c[1], V = c[2] or c[1], tail = tail, param = pl.arena == "params" and pl.offset or nil, n = n }
  end
  function e.grad(t)
    local pl = e.grad_place(t)
    if not pl then return nil end
    local c = e.chain(t)
    return { ptr = device_ptr(pl), S = c[1], V = c[2] or c[1], n = e.count_max(t.shape) }
  end
  function e.save(node, name) return device_ptr(e.save_place(node, name)) end
  function e.state(node, name)
    local s = e.state_entry(node, name)
    if not s then return "NULL" end
    return string.format("(void *)(m->d_buffers + %d)", s.offset)
  end

  -- a region of the scratch arena for this op: n elements of `fmt` (a number: the
  -- count at the largest batch)
  function e.scratch(n, fmt)
    assert(math.type(n) == "integer", "a scratch size is a number of elements")
    local bytes = n * FMT[fmt].bytes
    local off = used
    used = used + (bytes + 255) // 256 * 256
    if used > scratch.max then scratch.max = used end
    return { ptr = string.format("(void *)(m->d_scratch + %d)", off), S = fmt, V = fmt, n = n }
  end
  add_kernels(e, kernels)
  add_gemm(e)
  return e
end

-- e.kernel and e.launch: NVRTC kernels, each source once in `kernels`
function add_kernels(e, kernels)
  -- a kernel: its name is its kind and its operands' formats; the same name is the
  -- same source, compiled once
  function e.kernel(k)
    local sig, decls, macros = {}, {}, {}
    -- a fused tail replaces the store of the producer's output (and adds its operands)
    local tails = {}
    for i = 1, #k.ops do
      local o = k.ops[i]
      if o[3] == "w" and o[2].tail then tails[o[1]] = fuse_cuda.tail_store(e, o[2].tail, e.fz, o[1], o[2], k.ops) end
    end
    for _, o in ipairs(k.ops) do
      local name, d, mode = o[1], o[2], o[3]
      if mode == "p" then
        decls[#decls + 1] = d.scalar .. " " .. name
        goto next
      end
      sig[#sig + 1] = FMT[d.S].code .. FMT[d.V].code
      local ct = FMT[d.S].ctype
      decls[#decls + 1] = string.format("%s%s *__restrict__ %s", mode == "r" and "const " or "", ct, name)
      local widen = string.format("so_widen_%s", d.S)
      if mode == "r" or mode == "a" then
        macros[#macros + 1] = string.format("#define ld_%s(i) so_round_%s(%s(%s[i]))", name, d.V, widen, name)
      end
      if mode == "r" then
      elseif tails[name] then
        macros[#macros + 1] = tails[name]
      elseif mode == "w" then
        macros[#macros + 1] = string.format("#define st_%s(i, v) (%s[i] = so_narrow_%s(so_round_%s(v)))", name, name, d.S, d.V)
      else
        -- a gradient: accumulated into, or (a sum made in a register) loaded and stored
        macros[#macros + 1] = string.format("#define st_%s(i, v) (%s[i] = so_narrow_%s(so_round_%s(v)))", name, name, d.S, d.V)
        macros[#macros + 1] = string.format("#define acc_%s(i, v) (%s[i] = so_narrow_%s(%s(%s[i]) + so_round_%s(v)))",
          name, name, d.S, widen, name, d.V)
      end
      ::next::
    end
    local kind = k.kind
    if next(tails) then kind = kind .. "_tail_" .. fnv(table.concat(macros, "\n")) end
    local name = kind .. (#sig > 0 and ("_" .. table.concat(sig, "_")) or "")
    local params = k.params
    if #decls > 0 then params = table.concat(decls, ", ") .. ", " .. params end
    -- (k.globals: file-scope declarations the body reads, e.g. a __constant__ table)
    if k.globals then macros[#macros + 1] = table.concat(k.globals, "\n") end
    local src = table.concat({
      "// " .. name .. ": generated by loom (gen/ops_cuda.lua)",
      string.format('#include "%s"', PRELUDE_NAME),
      table.concat(macros, "\n"),
      string.format('extern "C" __global__ void __launch_bounds__(%d) %s(%s) {', k.threads or 256, name, params),
      "    " .. k.body,
      "}",
      "",
    }, "\n")
    local have = kernels.by_name[name]
    if have then
      assert(have.src == src, "two kernels named " .. name)
      return have.index
    end
    kernels.list[#kernels.list + 1] = { name = name, src = src }
    kernels.by_name[name] = { index = #kernels.list - 1, src = src }
    return #kernels.list - 1
  end

  -- host lines launching kernel k: operand pointers, then `args` ({ctype, expr})
  function e.launch(k, ops, args, shape)
    local decl, refs = {}, {}
    for i, o in ipairs(ops) do
      if o[3] == "p" then
        decl[#decl + 1] = string.format("%s o%d = %s;", o[2].scalar, i, o[2].expr)
      else
        decl[#decl + 1] = string.format("void *o%d = %s;", i, o[2].ptr)
      end
      refs[#refs + 1] = "&o" .. i
    end
    for i, a in ipairs(args) do
      decl[#decl + 1] = string.format("%s a%d = %s;", a[1], i, a[2])
      refs[#refs + 1] = "&a" .. i
    end
    local threads = shape.threads or 256
    local blocks = shape.grid and string.format("lc_blocks(%s, %d)", shape.grid, threads) or tostring(shape.blocks)
    local lines = { "{   // " .. kernels.list[k + 1].name }
    for _, d in ipairs(decl) do lines[#lines + 1] = "    " .. d end
    lines[#lines + 1] = string.format("    void *args[] = { %s };", table.concat(refs, ", "))
    lines[#lines + 1] = string.format("    lc_launch(&m->kernels[%d], %s, %d, m->stream, args);", k, blocks, threads)
    lines[#lines + 1] = "}"
    return lines
  end

end

-- e.gemm: a cuBLASLt GEMM, its operands staged into its format where they are not in it
function add_gemm(e)
  -- the GEMM's operand format: the operands' view when they agree, else f32
  function e.gemm_format(a, b)
    if a.V == b.V and FMT[a.V].lc then return a.V end
    return "f32"
  end
  -- The compute copy: a float32 master parameter that a GEMM reads in 16 bits is read
  -- from m->d_compute (so_narrow_F(so_round_F(p)), what staging it would give: the view
  -- is F), which the optimizer's kernel writes with the update and model_upload after
  -- init/resume.  e.compute.fmt: that 16-bit format, once one GEMM has asked for it.
  e.compute = { fmt = nil }
  -- an operand in format F: itself, the compute copy, or converted into scratch
  -- (rounded through its view)
  local function staged(o, F, count, lines)
    if o.S == F and o.V == F then return o.ptr end
    if o.param and o.S == "f32" and o.V == F and F ~= "f32" then
      assert(e.compute.fmt == nil or e.compute.fmt == F, "one 16-bit compute format per program")
      e.compute.fmt = F
      return string.format("(void *)(m->d_compute + %d)", o.param)
    end
    local s = e.scratch(assert(o.n, "an operand knows its size"), F)
    local ops = { { "src", o, "r" }, { "dst", s, "w" } }
    local k = e.kernel { kind = "stage", ops = ops, params = "long long n",
      body = "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) st_dst(i, ld_src(i));" }
    for _, l in ipairs(e.launch(k, ops, { { "long long", count } }, { grid = count })) do lines[#lines + 1] = l end
    return s.ptr
  end
  -- q: what, ta, tb, M, N, K, A, B, C (operands), bias, accumulate; for a strided batch
  -- (lc_gemm_batched) also batch, sA, sB, sC (element strides between matrices, 0 for a
  -- broadcast A or B), nA, nB, nC (the operands' element counts) and alpha
  function e.gemm(q)
    -- the sizes come as values (numbers, or Sizes that name B): written here
    for _, k in ipairs { "M", "N", "K", "batch", "sA", "sB", "sC", "nA", "nB", "nC" } do
      assert(q[k] == nil or operands.is_size(q[k]), "a GEMM's size is a number or a Size")
    end
    local lines = {}
    local F = e.gemm_format(q.A, q.B)
    local M, N, K = tostring(q.M), tostring(q.N), tostring(q.K)
    local function mul(a, b) return string.format("(long long)(%s) * (%s)", a, b) end
    local pa = staged(q.A, F, q.nA or mul(M, K), lines)
    local pb = staged(q.B, F, q.nB or mul(K, N), lines)
    local C = q.C
    local nC = q.nC or mul(M, N)
    -- linear + ReLU fused (gen/fuse.lua): the GEMM writes the ReLU's output, the
    -- pre-activation never goes to memory
    local epilogue = C.tail and C.tail.epilogue
    local act, aux = "LC_EPI_RELU", "NULL"
    if epilogue then
      local grp = C.tail
      local m = grp.members[1]
      if m.op == "gelu" then
        -- GELU's backward reads the pre-activation: written beside through the aux output
        act = grp.stored[e.fz.resolve(grp.head.out)] and "LC_EPI_GELU_AUX" or "LC_EPI_GELU"
        if act == "LC_EPI_GELU_AUX" then aux = C.ptr end
      end
      C = e.val(m.out)
    end
    local direct = C.S == C.V and (C.S == F or C.S == "f32")
    assert(direct or not epilogue, "an epilogue GEMM writes its output directly (gen/fuse.lua)")
    local Dfmt = direct and C.S or ((C.V == F or C.V == "f32") and C.V or "f32")
    local pbias = "NULL"
    if q.bias then pbias = staged(q.bias, Dfmt, N, lines) end
    local dptr = C.ptr
    local tmp
    if not direct then
      tmp = e.scratch(assert(C.n, "an operand knows its size"), Dfmt)
      dptr = tmp.ptr
    end
    local cur = e.node
    local where = cur and cur.where and string.format("%s <- %s:%d", q.what, cur.where.file, cur.where.line) or q.what
    lines[#lines + 1] = string.format("{   static lc_gemm_site site = { {NULL}, {{0}}, 0, %s };", util.c_string(where))
    local beta = (direct and q.accumulate) and "1.0f" or "0.0f"
    if q.batch then
      assert(not q.bias and not epilogue, "a batched GEMM has no bias and no epilogue")
      lines[#lines + 1] = string.format("    lc_gemm_batched(&site, %d, %d, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, TF32, m->stream);",
        q.ta, q.tb, M, N, K, q.batch, pa, q.sA, pb, q.sB, FMT[F].lc, dptr, q.sC, FMT[Dfmt].lc, literal(q.alpha or 1), beta)
    elseif epilogue then
      lines[#lines + 1] = string.format("    lc_gemm_epilogue(&site, %d, %d, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, TF32, m->stream);",
        q.ta, q.tb, M, N, K, pa, pb, FMT[F].lc, dptr, FMT[Dfmt].lc, beta, pbias, act, aux)
    else
      lines[#lines + 1] = string.format("    lc_gemm(&site, %d, %d, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, TF32, m->stream);",
        q.ta, q.tb, M, N, K, pa, pb, FMT[F].lc, dptr, FMT[Dfmt].lc, beta, pbias)
    end
    lines[#lines + 1] = "}"
    if not direct then
      local mode = q.accumulate and "a" or "w"
      local ops = { { "t", tmp, "r" }, { "c", C, mode } }
      local k = e.kernel { kind = q.accumulate and "gemm_accum" or "gemm_store", ops = ops, params = "long long n",
        body = "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) " ..
               (q.accumulate and "acc_c(i, ld_t(i));" or "st_c(i, ld_t(i));") }
      for _, l in ipairs(e.launch(k, ops, { { "long long", nC } }, { grid = nC })) do lines[#lines + 1] = l end
    end
    return lines
  end
end

-- Gradient clipping on the device (Fabric's clip_gradients, as the C backend's
-- clip_gradients): by value, one clamp kernel; by norm, CLIP_CHUNKS blocks each sum the
-- terms of one of the CPU's 64 fixed chunks in double (threads strided, then a tree:
-- the order within a chunk differs from the CPU's 8 lane sums, so the norm may
-- differ in its last bits), one thread adds the chunks in the CPU's order and writes the
-- coefficient (double) to scratch, and the scale kernel reads it there (no host sync:
-- the clip is capturable in a CUDA Graph).  The per-element parts are scalar_ops.h's.
-- `shard` (fsdp's: { g, n }, this rank's part of the averaged gradients, C expressions):
-- over it, the norm's 64 chunk sums added over the ranks (ncclAllReduce on the compute
-- stream) before the coefficient, as the C program's norm over the shard, then over the ranks.
local function clip_lines(sp, ctx, scratch, shard)
  local c = sp.train.clip
  if not c then return {} end
  local lines = {}
  if c.clip_val then
    local k = ctx.kernel { kind = "clip_value", ops = {}, params = "state_t *__restrict__ g, long long n, float v",
      body = "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)\n" ..
             "        g[i] = state_narrow(so_clip_value(state_widen(g[i]), v));" }
    lines[#lines + 1] = string.format("    {   // clip_grad_value_(clip_value=%s)", literal(c.clip_val))
    lines[#lines + 1] = string.format("        void *g = %s; long long n = %s; float v = %s;", shard and shard.g or "m->d_grads",
      shard and shard.n or "NUM_PARAMS", literal(c.clip_val))
    lines[#lines + 1] = "        void *args[] = { &g, &n, &v };"
    lines[#lines + 1] = string.format("        lc_launch(&m->kernels[%d], lc_blocks(n, 256), 256, m->stream, args);", k)
    lines[#lines + 1] = "    }"
    return lines
  end
  if scratch.max < 1024 then scratch.max = 1024 end   -- 64 partial sums and the coefficient
  local inf = c.norm_type == math.huge
  local term, combine, finish
  if inf then
    term, combine = "so_norm_abs(state_widen(g[i]))", "s = fmax(s, %s);"
    finish = "for (int c = 0; c < 64; c++) total = fmax(total, part[c]);"
  else
    term = c.norm_type == 2 and "so_norm_sq(state_widen(g[i]))" or string.format("so_norm_pow(state_widen(g[i]), %.17g)", c.norm_type)
    combine = "s += %s;"
    finish = "for (int c = 0; c < 64; c++) total += part[c];\n    total = " ..
      (c.norm_type == 2 and "sqrt(total);" or string.format("pow(total, 1.0 / %.17g);", c.norm_type))
  end
  local reduce = inf and [[
    __shared__ double sh[256];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] = fmax(sh[threadIdx.x], sh[threadIdx.x + w]);
        __syncthreads();
    }
    s = sh[0];]] or "    s = block_sum(s);"
  local kp = ctx.kernel { kind = "clip_norm_part", ops = {}, params = "const state_t *__restrict__ g, double *part, long long n",
    body = table.concat({
      "// block c: the CPU's chunk c of 64, [n c / 64, n (c + 1) / 64)",
      "    const long long lo = n * (long long)blockIdx.x / 64, hi = n * ((long long)blockIdx.x + 1) / 64;",
      "    double s = 0;",
      "    for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) " .. string.format(combine, term),
      reduce,
      "    if (threadIdx.x == 0) part[blockIdx.x] = s;",
    }, "\n") }
  local kc = ctx.kernel { kind = "clip_norm_coef", ops = {}, params = "const double *part, double *coef, double max_norm",
    body = "if (threadIdx.x != 0 || blockIdx.x != 0) return;\n    double total = 0;\n    " .. finish ..
           "\n    *coef = so_clip_coef(total, max_norm);   // torch.nn.utils.clip_grad_norm_" ..
           "\n    coef[1] = total;   // the norm before clipping, for the host (train/grad_norm)" }
  local ks = ctx.kernel { kind = "clip_norm_scale", ops = {}, params = "state_t *__restrict__ g, const double *coef, long long n",
    body = "const double c = *coef;\n    if (c >= 1) return;\n    const float cf = (float)c;\n" ..
           "    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)\n" ..
           "        g[i] = state_narrow(so_clip_scale(state_widen(g[i]), cf));" }
  local norm = {
    string.format("    {   // clip_grad_norm_(max_norm=%s, norm_type=%s)", literal(c.max_norm), inf and "inf" or string.format("%.17g", c.norm_type)),
    string.format("        void *g = %s, *part = m->d_scratch, *coef = m->d_scratch + 512;", shard and shard.g or "m->d_grads"),
    string.format("        long long n = %s;%s", shard and shard.n or "NUM_PARAMS", shard and "   // FSDP: this rank's part" or ""),
    string.format("        double max_norm = %.17g;", c.max_norm),
    "        void *a1[] = { &g, &part, &n };",
    string.format("        lc_launch(&m->kernels[%d], 64, 256, m->stream, a1);", kp),
    "        void *a2[] = { &part, &coef, &max_norm };",
    string.format("        lc_launch(&m->kernels[%d], 1, 32, m->stream, a2);", kc),
    "        LC_CHECK(cudaMemcpyAsync(m->h_grad_norm, (double *)coef + 1, sizeof(double), cudaMemcpyDeviceToHost, STREAM(m->stream)));",
    "        void *a3[] = { &g, &coef, &n };",
    string.format("        lc_launch(&m->kernels[%d], lc_blocks(n, 256), 256, m->stream, a3);", ks),
    "    }",
  }
  if shard then table.insert(norm, 7, "        ddp_nccl_sum(part, 64, m->stream);   // FSDP: the chunks' sums over every rank's part") end
  for _, l in ipairs(norm) do lines[#lines + 1] = l end
  return lines
end

-- The optimizer update: torch.optim's SGD, Adam or AdamW as one kernel over every
-- parameter, after the clip.  Its constants (learning rate, bias corrections, ...) are
-- computed on the host in double and rounded to float as the C backend's update rounds
-- them, into the step's constants (step_consts.opt in model.cu), which the kernel reads
-- on the device: a captured step replays with each step's values.  Under 16-mixed the
-- kernel reads GradScaler's found_inf and skips the update when it is set.
-- Parameter groups (`og`, gen/emit_train.lua's values.opt_groups: AdamW's decay_min_ndim,
-- an optimizer's `groups`): one set of constants per group (step_consts.opt[G]), each
-- from the group's lr and weight decay as the C backend's runs compute them, and the
-- runs' ends and groups as a table in the kernel's source (__constant__): each thread
-- walks the runs forward as its grid-stride index grows.
-- `sharded` (fsdp's SHARD_GRAD_OP on NCCL): the kernel runs over this rank's part of the
-- arena, [fsdp_lo(), fsdp_hi()) of runtime/ddp.h, its state buffers that part's (the
-- groups' runs found from the part's start); FULL_SHARD: over the rank's shard
-- (runtime/ddp_nccl.h: its parts of the units), the groups' runs of that shard computed
-- at start from the arena's and read from device memory.
-- Returns the host lines (optimizer_consts), the device lines (optimizer_ops), the
-- state's names, the constants' type, the number of constant sets ("" for one, "[G]")
-- and, for FULL_SHARD's groups, optimizer_alloc's lines that put the shard's runs on the device.
-- `over` (a training_step's optimizer, user_step_code): { opt, kind (the kernel's name's
-- suffix), index (its constants: step_consts.opt[index]), host_index (optional: where the
-- host lines fill them instead, a C expression: 16-mixed's variants) } instead of
-- train.optimizer's.
local function optimizer(sp, kernels, ctx, scratch, scaling, og, nparams, sharded, over)
  local opt = over and over.opt or sp.train.optimizer
  local a = opt.args
  local HC = over and string.format("(((step_consts *)m->h_consts)->opt + %s)", over.host_index or over.index) or "((step_consts *)m->h_consts)->opt"
  local DC = over and string.format("((step_consts *)m->d_consts)->opt + %d", over.index) or "&((step_consts *)m->d_consts)->opt"
  local suffix = over and over.kind or ""
  if (opt.kind ~= "AdamW" and opt.kind ~= "Adam" and opt.kind ~= "SGD") or a.amsgrad or (a.maximize and opt.kind ~= "SGD") then
    diag.fatal(opt.where or sp.train.where, string.format("the CUDA backend does not run the %s optimizer%s yet (SGD, Adam and AdamW)",
      opt.kind, a.amsgrad and " with amsgrad" or a.maximize and " with maximize" or ""))
  end
  -- (FSDP: this rank's part, its state indexed from the part's start)
  local PARAMS, GRADS = sharded and "m->d_params + fsdp_lo()" or "m->d_params", sharded and "m->d_grads + fsdp_lo()" or "m->d_grads"
  local NE = sharded and "(long long)(fsdp_hi() - fsdp_lo())" or "NUM_PARAMS"
  if sharded == "FULL_SHARD" then   -- (the shards are buffers of their own)
    PARAMS, GRADS, NE = "fsdp_nccl_param_shard()", "fsdp_nccl_grad_shard()", "(long long)fsdp_nccl_shard_len()"
  end
  local N = string.format("    long long n = %s;%s", NE, sharded and "   // FSDP: this rank's part" or "")
  local clip = clip_lines(sp, ctx, scratch, sharded and { g = GRADS, n = NE })
  -- the compute copy (see staged in context) is written in the same pass as the update
  local cf = ctx.compute.fmt
  local copy_kind = cf and ("_copy_" .. FMT[cf].code) or ""
  local copy_param = cf and ", so_u16 *__restrict__ copy" or ""
  local copy_stmt = cf and string.format("\n        copy[i] = so_narrow_%s(so_round_%s(pi));   // the compute copy", cf, cf) or ""
  local copy_ptr = cf and (sharded == "FULL_SHARD" and ", *copy = fsdp_nccl_compute_shard()" or sharded and ", *copy = m->d_compute + fsdp_lo()"
    or ", *copy = m->d_compute") or ""
  local copy_arg = cf and ", &copy" or ""
  local skip_ptr = scaling and "&m->d_scaler->found_inf" or "NULL"
  local LOOP = "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {\n"
  local SKIP = "if (skip && *skip) return;   // GradScaler found inf/nan gradients: the step is skipped\n    "
  -- the groups: each group's constants (`c`, a pointer into the array), the runs' table
  local groups_kind, globals, CONSTS, PICK = "", nil, "const %s c = *consts;\n    ", ""
  local shard_runs   -- (FULL_SHARD's groups: optimizer_alloc's lines)
  local count = ""
  if og then
    -- the runs cover [0, NUM_PARAMS): the gaps between the groups' runs (train.freeze's
    -- parameters; a training_step's other optimizers') are run group SKIP_RUN, which the
    -- kernel leaves as they are
    local ends, gids, at = {}, {}, 0
    local function run(finish, gid)
      ends[#ends + 1] = tostring(finish) .. "LL"
      gids[#gids + 1] = gid
      at = finish
    end
    for _, r in ipairs(og.runs) do
      if r.begin > at then run(r.begin, "SKIP_RUN") end
      run(r.finish == "NUM_PARAMS" and nparams or r.finish, tostring(r.group.index))
    end
    if at < nparams then run(nparams, "SKIP_RUN") end
    local skips = table.concat(gids, " "):find("SKIP_RUN", 1, true) ~= nil
    groups_kind = "_groups" .. #og.groups .. (skips and "_skips" or "")
    count = string.format("[%d]", #og.groups)
    globals = {
      string.format("// the parameter groups' runs in layout order (gen/emit_train.lua): each run's end and group"),
      string.format("__constant__ long long opt_run_end[%d] = { %s };", #ends, table.concat(ends, ", ")),
      string.format("__constant__ unsigned char opt_run_group[%d] = { %s };", #gids, table.concat(gids, ", ")),
    }
    if skips then table.insert(globals, 2, "#define SKIP_RUN 255   // a run this update leaves as it is (frozen, or another optimizer's)") end
    CONSTS = "int r = 0;   // this thread's run: its indices only grow\n    "
    PICK = "        while (i >= opt_run_end[r]) r++;\n" ..
      (skips and "        if (opt_run_group[r] == SKIP_RUN) continue;   // no update, no weight decay\n" or "") ..
      "        const %s c = consts[opt_run_group[r]];\n"
    if sharded == "FULL_SHARD" then
      -- (FULL_SHARD: the rank's shard is its part of every unit, one after another, a part
      -- padded past its unit's end; the runs above, of the arena, become runs of the shard at
      -- run time (the parts depend on the ranks: runtime/ddp_nccl.c's fsdp_nccl_shard_runs),
      -- in device memory the kernel takes instead of its __constant__ table; the padding is
      -- run group SKIP_RUN)
      shard_runs = {
        string.format("    // the parameter groups' runs of the arena (gen/emit_train.lua): each run's end and group (%s: none)", "255"),
        string.format("    static const long long run_end[%d] = { %s };", #ends, table.concat(ends, ", ")),
        string.format("    static const unsigned char run_group[%d] = { %s };", #gids, (table.concat(gids, ", "):gsub("SKIP_RUN", "255"))),
        "    // as runs of this rank's shard (its part of each unit; a part's padding: no group), on the device",
        string.format("    fsdp_nccl_shard_runs(run_end, run_group, %d, 255, &o->d_run_end, &o->d_run_group);", #ends),
      }
      globals = { "#define SKIP_RUN 255   // a run this update leaves as it is (a part's padding; frozen, or another optimizer's)" }
      PICK = "        while (i >= opt_run_end[r]) r++;\n" ..
        "        if (opt_run_group[r] == SKIP_RUN) continue;   // no update, no weight decay\n" ..
        "        const %s c = consts[opt_run_group[r]];\n"
      groups_kind = "_groups" .. #og.groups .. "_shard"
    elseif sharded then   -- (SHARD_GRAD_OP: i counts from the rank's part, at `base` of the arena)
      groups_kind = groups_kind .. "_base"
      PICK = PICK:gsub("while %(i >= ", "while (i + base >= ")
    end
  end
  local based = og and sharded == "SHARD_GRAD_OP"
  -- (the base after the count line)
  if based then N = N .. "\n    long long base = (long long)fsdp_lo();   // FSDP: where the rank's part starts (the groups' runs)" end
  local BASE_PARAM, BASE_ARG = based and ", long long base" or "", based and ", &base" or ""
  if shard_runs then
    BASE_PARAM = ", const long long *__restrict__ opt_run_end, const unsigned char *__restrict__ opt_run_group"
    BASE_ARG = ", &run_end, &run_group"
    N = N .. "\n    void *run_end = o->d_run_end, *run_group = o->d_run_group;   // FSDP FULL_SHARD: the groups' runs of this rank's shard"
  end
  -- host lines filling each group's constants: fill(lines, LR, wd, C) adds the lines for
  -- the constants at C (a pointer expression) from the lr LR (C) and weight decay wd
  local function each_group(lines, fill, ctype)
    if not og then
      lines[#lines + 1] = string.format("    %s *c = &%s;", ctype, HC)
      fill(lines, "lr", a.weight_decay or 0, "c")
      return
    end
    -- each group's lr as the C backend's runs compute it (the schedule's floor stays)
    local lit, floor = util.c_float, og.floor
    for _, gr in ipairs(og.groups) do
      local lrx = (floor and floor ~= 0) and string.format("%s + (lr - %s) * %s", lit(floor), lit(floor), lit(gr.ratio))
        or string.format("lr * %s", lit(gr.ratio))
      local body = {
        string.format("    const double lr_g = %s;", lrx),
        string.format("    %s *c = &%s[%d];", ctype, HC, gr.index),
      }
      fill(body, "lr_g", gr.weight_decay, "c")
      lines[#lines + 1] = string.format("    {   // group %d: lr %s, weight_decay %s: %s", gr.index, lit(gr.lr), lit(gr.weight_decay), gr.label)
      for _, x in ipairs(body) do lines[#lines + 1] = "    " .. x end
      lines[#lines + 1] = "    }"
    end
  end
  local ops = {}
  for _, l in ipairs(clip) do ops[#ops + 1] = l end
  if opt.kind == "SGD" then
    local k = ctx.kernel { kind = "sgd" .. groups_kind .. copy_kind .. suffix, ops = {}, globals = globals,
      params = "state_t *__restrict__ p, opt_t *__restrict__ buf, const state_t *__restrict__ g" .. copy_param ..
               ", long long n, const so_sgd_consts *consts, const int *skip" .. BASE_PARAM,
      -- each value widened to float, updated, and rounded once where it is stored (the
      -- C backend's 16-bit update; nothing to convert in float)
      body = SKIP .. string.format(CONSTS, "so_sgd_consts") .. LOOP .. string.format(PICK, "so_sgd_consts") ..
             "        float pi = state_widen(p[i]), bi = buf ? opt_widen(buf[i]) : 0.0f;\n" ..
             "        so_sgd(&pi, &bi, state_widen(g[i]), &c);\n" ..
             "        p[i] = state_narrow(pi);\n        if (buf) buf[i] = opt_narrow(bi);" .. copy_stmt .. "\n    }" }
    local hasmom = a.momentum ~= 0
    local host = {
      string.format("    // SGD(lr=%s, momentum=%s, dampening=%s, weight_decay=%s, nesterov=%s, maximize=%s)", a.lr, a.momentum,
        a.dampening, a.weight_decay, tostring(a.nesterov), tostring(a.maximize or false)),
      "    // the constants in float, as the CPU's k_sgd_step rounds them (scalar_ops.h: so_sgd)",
    }
    each_group(host, function(t, LR, wd, c)
      for _, x in ipairs {
        string.format("    %s->lr = (float)%s;", c, LR),
        string.format("    %s->momentum = (float)mom;", c),
        string.format("    %s->damp = (float)(1 - %.17g);", c, a.dampening),
        string.format("    %s->wd = (float)%.17g;", c, wd),
        string.format("    %s->has_wd = %d;", c, wd ~= 0 and 1 or 0),
        string.format("    %s->has_momentum = %d;", c, hasmom and 1 or 0),
        string.format("    %s->nesterov = %d;", c, a.nesterov and 1 or 0),
        string.format("    %s->maximize = %d;", c, a.maximize and 1 or 0),
        string.format("    %s->first = step == 0;   // the momentum buffer starts as the first gradient", c),
      } do t[#t + 1] = x end
    end, "so_sgd_consts")
    for _, l in ipairs {
      string.format("    void *p = %s, *buf = %s, *g = %s%s;", PARAMS, hasmom and "o->d_momentum_buffer" or "NULL", GRADS, copy_ptr),
      hasmom and "" or "    (void)o;",
      string.format("    void *consts = %s, *skip = %s;", DC, skip_ptr),
      N,
      string.format("    void *args[] = { &p, &buf, &g%s, &n, &consts, &skip%s };", copy_arg, BASE_ARG),
      string.format("    lc_launch(&m->kernels[%d], lc_blocks(n, 256), 256, m->stream, args);", k),
    } do ops[#ops + 1] = l end
    return table.concat(host, "\n"), table.concat(ops, "\n"), hasmom and { "momentum_buffer" } or {}, "so_sgd_consts", count, shard_runs
  end
  local k = ctx.kernel { kind = "adam" .. groups_kind .. copy_kind .. suffix, ops = {}, globals = globals,
    params = "state_t *__restrict__ p, opt_t *__restrict__ m, opt_t *__restrict__ v, const state_t *__restrict__ g" .. copy_param ..
             ", long long n, const so_adam_consts *consts, const int *skip" .. BASE_PARAM,
    body = SKIP .. string.format(CONSTS, "so_adam_consts") .. LOOP .. string.format(PICK, "so_adam_consts") ..
           "        float pi = state_widen(p[i]), mi = opt_widen(m[i]), vi = opt_widen(v[i]);\n" ..
           "        so_adam(&pi, &mi, &vi, state_widen(g[i]), &c);\n" ..
           "        p[i] = state_narrow(pi);\n        m[i] = opt_narrow(mi);\n        v[i] = opt_narrow(vi);" .. copy_stmt .. "\n    }" }
  local adamw = opt.kind == "AdamW"
  local host = {
    "    // " .. string.format("%s(lr=%s, betas=(%s, %s), eps=%s, weight_decay=%s%s)", opt.kind, a.lr, a.betas[1], a.betas[2], a.eps,
      a.weight_decay or 0, (og and not over) and (a.decay_min_ndim and string.format(", decay_min_ndim=%d", a.decay_min_ndim) or ", groups") or ""),
    "    // bias corrections in double, as torch.optim computes them in Python; the constants",
    "    // rounded to float as the C backend's update rounds them",
    "    const double beta1 = mom;",
    string.format("    const double bc1 = 1.0 - pow(beta1, (double)(step + 1)), bc2 = 1.0 - pow(%.17g, (double)(step + 1));", a.betas[2]),
  }
  each_group(host, function(t, LR, wd, c)
    for _, x in ipairs {
      string.format("    %s->decay = %s;", c, (adamw and wd ~= 0) and string.format("(float)(1.0 - %s * %.17g)", LR, wd) or "1.0f"),
      string.format("    %s->l2 = %s;", c, (not adamw and wd ~= 0) and string.format("(float)%.17g", wd) or "0.0f"),
      string.format("    %s->one_minus_beta1 = (float)(1.0 - beta1);", c),
      string.format("    %s->beta2 = (float)%.17g;", c, a.betas[2]),
      string.format("    %s->one_minus_beta2 = (float)%.17g;", c, 1 - a.betas[2]),
      string.format("    %s->step_size = (float)(%s / bc1);", c, LR),
      string.format("    %s->bc2_sqrt = (float)sqrt(bc2);", c),
      string.format("    %s->eps = (float)%.17g;", c, a.eps),
    } do t[#t + 1] = x end
  end, "so_adam_consts")
  for _, l in ipairs {
    string.format("    void *p = %s, *mm = o->d_exp_avg, *v = o->d_exp_avg_sq, *g = %s%s;", PARAMS, GRADS, copy_ptr),
    string.format("    void *consts = %s, *skip = %s;", DC, skip_ptr),
    N,
    "    void *args[] = { &p, &mm, &v, &g" .. copy_arg .. ", &n, &consts, &skip" .. BASE_ARG .. " };",
    string.format("    lc_launch(&m->kernels[%d], lc_blocks(n, 256), 256, m->stream, args);", k),
  } do ops[#ops + 1] = l end
  return table.concat(host, "\n"), table.concat(ops, "\n"), { "exp_avg", "exp_avg_sq" }, "so_adam_consts", count, shard_runs
end

-- Accuracy on the host from the loss's input (staged to f32 on the device) and the
-- host batch's targets, as the C backend computes it.
local function metrics(e, loss_node, kernels)
  local x, t = loss_node.inputs[1], loss_node.inputs[2]
  -- (a loss without an accuracy, e.g. mse or one reduced by mean(), leaves it NaN)
  local acc = t and host_c.accuracy_lines(loss_node, "m->h_metrics", "batch->" ..
    cname(t.input or (loss_node.op == "cross_entropy" and "label" or "target")), "float", "B", e.numel(x))
  if not acc then return "    (void)m; (void)B; (void)correct; (void)count;" end
  local xv = e.val(x)
  local ops = { { "src", xv, "r" }, { "dst", { ptr = "m->d_metrics", S = "f32", V = "f32" }, "w" } }
  local k = e.kernel { kind = "stage", ops = ops, params = "long long n",
    body = "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) st_dst(i, ld_src(i));" }
  local lines = indent(e.launch(k, ops, { { "long long", e.numel(x) } }, { grid = e.numel(x) }))
  lines[#lines + 1] = string.format("    LC_CHECK(cudaMemcpyAsync(m->h_metrics, m->d_metrics, sizeof(float) * (size_t)(%s), cudaMemcpyDeviceToHost, STREAM(m->stream)));", e.numel(x))
  lines[#lines + 1] = "    LC_CHECK(cudaStreamSynchronize(STREAM(m->stream)));"
  for _, l in ipairs(acc) do lines[#lines + 1] = l end
  return table.concat(lines, "\n")
end

-- train.log's metrics on the device (the CPU program's model_user_metrics and
-- metric_acc, gen/emit_train.lua): after each forward one thread adds the metrics' values
-- into accumulators in device memory, as log_reduce says (a mean weighted by the batch's
-- size, a sum, a max where a NaN wins; an accumulator with no weight yet takes the value,
-- so that zeroed memory is an empty one), in double as the CPU's.  Three accumulators:
-- this step's micro-batches and this epoch's (the training step adds into both, inside a
-- captured graph too), the last evaluation's.  They come back to the host only where a
-- value is logged: a logged step's with its loss (the copy queued with the step, no wait of
-- its own), an epoch's and an evaluation's at their end.  Returns the template values
-- (model.h, model.cu, and train.c's), or empty ones without train.log.
local function user_metrics_code(l, e, every)
  local list = l.trace.metrics or {}
  local v = { fields = "", decl = "", alloc = "", free = "", ops = "", step = "", fetch = "", body = "",
              queue = "", eval_init = "", eval_batch = "", eval_reduce = "", summary = "" }
  if #list == 0 then return v end
  local N = #list
  e.begin(nil)
  local ops, names, reduces, vals, adds = {}, {}, {}, {}, {}
  for i, mt in ipairs(list) do
    ops[i] = { "m" .. i, e.val(mt.tensor), "r" }
    names[i] = util.c_string(mt.name)
    reduces[i] = "USER_METRIC_" .. mt.reduce:upper()
    vals[i] = string.format("(double)ld_m%d(0)", i)
    local j = i - 1
    if mt.reduce == "mean" then
      adds[i] = string.format("        s[%d] += v[%d] * B;   // %s: mean, weighted by the batch's size", j, j, mt.name)
    elseif mt.reduce == "sum" then
      adds[i] = string.format("        s[%d] += v[%d];   // %s: sum", j, j, mt.name)
    else
      adds[i] = string.format("        s[%d] = s[%d] == 0 ? v[%d] : so_max_nan(s[%d], v[%d]);   // %s: max", j, N, j, j, j, mt.name)
    end
  end
  local k = e.kernel { kind = "user_metrics", ops = ops, params = "double *a, double *b, double B",
    body = table.concat({
      "if (threadIdx.x != 0 || blockIdx.x != 0) return;",
      string.format("    const double v[%d] = { %s };", N, table.concat(vals, ", ")),
      "    double *acc[2] = { a, b };",
      "    for (int k = 0; k < 2; k++) {",
      "        double *s = acc[k];",
      "        if (!s) continue;",
      table.concat(adds, "\n"),
      string.format("        s[%d] += B;   // the weight: samples so far", N),
      "    }" }, "\n") }
  v.fields = table.concat({ "",
    "    // train.log's metrics: UM_COUNT accumulators of NUM_USER_METRICS values and a weight,",
    "    // on the device and pinned; the step's copy is queued with the step when its row is",
    "    // logged (user_metrics_fetch) and then arrives with the loss (user_metrics_fetched)",
    "    double *d_user_metrics, *h_user_metrics;",
    "    int user_metrics_fetch, user_metrics_fetched;",
    "    int64_t user_metrics_reads, user_metrics_waits;   // read-backs; those of a step's row that waited on their own" }, "\n")
  v.decl = table.concat({ "",
    "",
    string.format("// train.log's metrics (%s), computed by the forward and accumulated on the device", util.c_comment(l.spec.file)),
    string.format("#define NUM_USER_METRICS %d", N),
    "enum { USER_METRIC_MEAN, USER_METRIC_SUM, USER_METRIC_MAX };   // log_reduce: over an epoch's or an evaluation's batches",
    "extern const char *const model_user_metric_names[NUM_USER_METRICS];",
    "extern const int model_user_metric_reduce[NUM_USER_METRICS];",
    "// the accumulators: this step's micro-batches and this epoch's (model_train_step adds to",
    "// both), an evaluation's (model_user_metrics_add after model_forward)",
    "enum { UM_STEP, UM_EPOCH, UM_EVAL, UM_COUNT };",
    "void model_user_metrics_clear(Model *m, int which);      // queued: empty it",
    "void model_user_metrics_add(Model *m, int which, int B);  // queued: the last forward's values, B samples",
    "// The accumulator's sums, maxima (values) and weight on the host: the copy that came with",
    "// the step's loss (UM_STEP with m->user_metrics_fetch set before the step), else read now",
    "void model_user_metrics_read(Model *m, int which, double *values, double *weight);" }, "\n")
  v.alloc = table.concat({ "",
    "    LC_CHECK(cudaMalloc((void **)&m->d_user_metrics, sizeof(double) * UM_COUNT * (NUM_USER_METRICS + 1)));",
    "    LC_CHECK(cudaMallocHost((void **)&m->h_user_metrics, sizeof(double) * UM_COUNT * (NUM_USER_METRICS + 1)));",
    "    LC_CHECK(cudaMemset(m->d_user_metrics, 0, sizeof(double) * UM_COUNT * (NUM_USER_METRICS + 1)));   // empty" }, "\n")
  v.free = "\n    cudaFree(m->d_user_metrics); cudaFreeHost(m->h_user_metrics);"
  local launch = indent(e.launch(k, ops, { { "void *", "a" }, { "void *", "b" }, { "double", "(double)B" } }, { blocks = 1, threads = 32 }))
  v.ops = table.concat({ "",
    "",
    "// train.log's metrics of the last forward (B samples) added into accumulators a and b (b may be NULL)",
    "static void user_metrics_ops(Model *m, double *a, double *b, int B) {",
    table.concat(launch, "\n"),
    "}" }, "\n")
  v.step = "\n    user_metrics_ops(m, m->d_user_metrics + UM_STEP * (NUM_USER_METRICS + 1), m->d_user_metrics + UM_EPOCH * (NUM_USER_METRICS + 1), m->slots[m->slot].B);"
  v.fetch = table.concat({ "",
    "    if (m->user_metrics_fetch) {   // the step's row is logged: its metrics come back with its loss",
    "        LC_CHECK(cudaMemcpyAsync(m->h_user_metrics + UM_STEP * (NUM_USER_METRICS + 1), m->d_user_metrics + UM_STEP * (NUM_USER_METRICS + 1),",
    "                                 sizeof(double) * (NUM_USER_METRICS + 1), cudaMemcpyDeviceToHost, STREAM(m->stream)));",
    "        m->user_metrics_fetched = 1;",
    "    }" }, "\n")
  v.body = table.concat({ "",
    "",
    "// ---------------------------------------------------------------------------",
    "// train.log's metrics: the device's accumulators (user_metrics_ops adds to them)",
    "",
    string.format("const char *const model_user_metric_names[NUM_USER_METRICS] = { %s };", table.concat(names, ", ")),
    string.format("const int model_user_metric_reduce[NUM_USER_METRICS] = { %s };", table.concat(reduces, ", ")),
    "",
    "void model_user_metrics_clear(Model *m, int which) {",
    "    LC_CHECK(cudaMemsetAsync(m->d_user_metrics + which * (NUM_USER_METRICS + 1), 0, sizeof(double) * (NUM_USER_METRICS + 1), STREAM(m->stream)));",
    "}",
    "",
    "void model_user_metrics_add(Model *m, int which, int B) {",
    "    user_metrics_ops(m, m->d_user_metrics + which * (NUM_USER_METRICS + 1), NULL, B);",
    "}",
    "",
    "void model_user_metrics_read(Model *m, int which, double *values, double *weight) {",
    "    double *h = m->h_user_metrics + which * (NUM_USER_METRICS + 1);",
    "    if (!(which == UM_STEP && m->user_metrics_fetched)) {",
    "        // an epoch's or an evaluation's end, or a step's row the step did not expect",
    "        // (a stop signal came while it ran): copied now",
    "        LC_CHECK(cudaMemcpyAsync(h, m->d_user_metrics + which * (NUM_USER_METRICS + 1), sizeof(double) * (NUM_USER_METRICS + 1),",
    "                                 cudaMemcpyDeviceToHost, STREAM(m->stream)));",
    "        LC_CHECK(cudaStreamSynchronize(STREAM(m->stream)));",
    "        if (which == UM_STEP) m->user_metrics_waits++;",
    "    }",
    "    if (which == UM_STEP) m->user_metrics_fetched = 0;",
    "    memcpy(values, h, sizeof(double) * NUM_USER_METRICS);",
    "    *weight = h[NUM_USER_METRICS];",
    "    m->user_metrics_reads++;",
    "}" }, "\n")
  -- train.c: the step's accumulator emptied where a step starts; its copy asked for where
  -- the step's row will be logged (the log_step condition, known before the step runs but
  -- for a stop signal that comes while it runs: model_user_metrics_read then waits)
  v.queue = table.concat({ "",
    "            // train.log's metrics accumulate on the device; they come back with the loss only",
    "            // on a step whose row is logged (every N steps, the run's last)",
    "            if (in_step == 0) model_user_metrics_clear(&m, UM_STEP);",
    string.format("            m.user_metrics_fetch = boundary && (rs.step + 1 >= total_steps || (rs.step + 1) %% %d == 0 || signals_stop_requested());", every) }, "\n")
  v.eval_init = "\n    model_user_metrics_clear(m, UM_EVAL);   // train.log's metrics over this dataset, on the device"
  v.eval_batch = "\n        model_user_metrics_add(m, UM_EVAL, B);"
  v.eval_reduce = "\n    model_user_metrics_read(m, UM_EVAL, um_eval.value, &um_eval.weight);   // the evaluation's, once"
  v.summary = "\n    if (!args.quiet) printf(\"train.log's metrics: %lld read-backs, %lld of a step's row waited\\n\", (long long)m.user_metrics_reads, (long long)m.user_metrics_waits);"
  return v
end

-- The CUDA program's blocks of the training loop (templates/loop/train.c.in's @{holes}:
-- what differs from the C program's, gen/emit_c.lua): device buffers and their copies
-- around checkpoints, the batch staged on the copy stream while a step runs, the step
-- queued (CUDA Graphs with --cuda-graph), the schedule's constants sent from the host
-- and the loss scaler on the device, --device and --jit-check.
local TRAIN_BLOCKS = {
  header = [==[
// ${model_name}: the training program for an NVIDIA GPU, generated by loom from ${spec_file}.
// The C backend's loop, top to bottom: load data → for each epoch, each batch:
// forward, loss, backward, (step every ACCUMULATE micro-batches and on the epoch's
// last), log → validate → callbacks → checkpoint.
// The step is queued on the GPU; while it runs, the host reads
// the next batch into pinned memory and its copy starts on the copy stream; then the
// step's loss is read.  Checkpoints are written from host copies of the device state.
// accelerator = "${accelerator}": without a device, ${cpu_program} (the CPU build) runs
// instead when "auto", else the program stops.  Regenerate rather than edit.
#include "model.h"
#include "loom_cuda.h"
#include "sample.h"
]==],
  device_schedule = [==[
// learning-rate schedule (the optimizer's update runs on the device: model.cu)

#define PI 3.14159265358979323846
#define MOMENTUM ${momentum}   // beta1 (Adam) when no schedule cycles it

// Learning rate of optimizer step `step` (0-based) in epoch `epoch`: ${scheduler_desc}
double lr_at(int64_t step, int64_t epoch, int64_t total_steps) {
${lr_body}
}

// beta1 for step `step`: ${momentum_desc}
double momentum_at(int64_t step, int64_t total_steps) {
${momentum_body}
}

// ${scaler_desc}: its update runs on the device (model.cu)
static void scaler_init(GradScaler *s) { s->scale = ${scaler_init_scale}; s->growth_tracker = 0; }

// ---------------------------------------------------------------------------
]==],
  args_fields = [==[
    int cuda_graph;   // --cuda-graph: full-size steps as CUDA Graphs (off by default)
    int device;       // --device N: the GPU (default: the spec's devices, ${device})
]==],
  usage = [==[
    fprintf(f, "usage: %s [--epochs N] [--max-steps N] [--seed N] [--resume CKPT] [--load-raw FILE [--load-raw-strict true|false]] [--out DIR] [--data DIR] [--quiet] [--cuda-graph] [--device N]\n"
               "       %s --jit-check sm_XY [PTX_DIR]   (compile every kernel for sm_XY; no device needed)\n"
               "trains " MODEL_NAME " on a CUDA device (generated by loom from %s)\n", "train", "train", "${spec_file}");
]==],
  args_defaults = [==[
    Args a = { DEFAULT_EPOCHS, DEFAULT_MAX_STEPS, DEFAULT_SEED, NULL, "${default_out}", NULL, LOAD_RAW_PATH, LOAD_RAW_STRICT, 0, 0, ${device}, 0 };
]==],
  args_parse = [==[
        else if (!strcmp(f, "--cuda-graph")) { a.cuda_graph = 1; }
        else if (!strcmp(f, "--device")) { a.device = (int)parse_count(f, v, 1024); i++; }
]==],
  save_from_device = [==[
    model_download(m);   // the device's state, copied to the host
    optimizer_download(o, m);
]==],
  weights_to_device = [==[
    model_upload(m);
]==],
  state_to_device = [==[
    model_upload(m);
    optimizer_upload(o, m);
]==],
  eval_forward = [==[
        model_stage(m, &batch, B);
        total += (double)model_forward(m, 0) * B;
]==],
  main_start = [==[
    if (argc >= 3 && !strcmp(argv[1], "--jit-check")) {
        int major = 0, minor = 0;
        if (sscanf(argv[2], "sm_%1d%1d", &major, &minor) != 2) { fprintf(stderr, "train: --jit-check takes sm_XY, e.g. sm_80\n"); return 2; }
        return model_jit_check(major, minor, argc >= 4 ? argv[3] : NULL) ? 1 : 0;
    }
    // the flags first (--device picks the GPU), then the device, or the CPU build of the
    // same spec (accelerator = "auto"; it gets the flags less the GPU's own)
    Args args = parse_args(argc, argv);
    lc_require_device(argc, argv, MODEL_ACCELERATOR, "${cpu_program}", args.device);
]==],
  model_setup = [==[
    if (model_alloc(&m, args.quiet)) die("out of memory");
    model_init(&m, args.seed);
    m.cuda_graph = args.cuda_graph;
    Optimizer opt;
    if (optimizer_alloc(&opt)) die("out of memory");
    opt.steps = 0;
    scaler_init(&opt.scaler);
    optimizer_upload(&opt, &m);   // the scaler's initial state to the device
]==],
  resume_steps = [==[
    if (!LOSS_SCALING) opt.steps = rs.step;   // no skipped steps: the optimizer's count is the run's
]==],
  loop_vars = [==[
    int64_t skipped = 0;   // steps the loss scaler skipped in this run
]==],
  micro_batch = [==[
        // the first batch of the epoch; each step then stages the next one while it runs
        int have = (rc = loader_next(train_loader, &db, &err)) == DATA_OK;
        if (have) { bind_batch(&batch, &db, &train_ds); model_stage(&m, &batch, (int)db.size); }
        while (have) {
            int B = (int)db.size;
            int64_t index = db.index;
            // one micro-batch, queued: forward and backward; on the last of the step's
            // ACCUMULATE micro-batches, or of the epoch's leftover ones (Lightning steps
            // on them; the loss is still divided by ACCUMULATE, as Lightning's is), also
            // the update.  The update's constants are the host's (schedule, bias
            // corrections); under 16-mixed the device unscales, skips an update with
            // inf/nan gradients and moves the loss scale, and the host learns it with the loss
            int64_t in_step = index % ACCUMULATE;
            m.step = (uint64_t)(rs.step * ACCUMULATE + in_step);   // dropout's stream: one per micro-batch
            int boundary = in_step + 1 == ACCUMULATE || index + 1 == batches_per_epoch;
            double lr = 0;
            if (boundary) {
                lr = lr_at(opt.steps, rs.epoch, total_steps);
                optimizer_consts(&m, &opt, lr, momentum_at(opt.steps, total_steps), opt.steps);
            }${user_metrics_queue}
            model_train_step(&m, &opt, boundary, ACCUMULATE);
            rs.batch = index + 1;
            if (boundary) {
                rs.step++;
                if (args.max_steps && rs.step >= args.max_steps) stop = 1;
                else if (signals_stop_requested()) stop = 2;
            }
            // the next batch, read and copied while the GPU computes this one
            have = 0;
            if (!stop) {
                have = (rc = loader_next(train_loader, &db, &err)) == DATA_OK;
                if (have) { bind_batch(&batch, &db, &train_ds); model_stage(&m, &batch, (int)db.size); }
            }
            real loss = model_loss_wait(&m);   // the step has run
            if (boundary) {
                // GradScaler: a skipped step leaves the parameters, the optimizer's state,
                // its step count and the schedule as they were
                if (LOSS_SCALING && model_scaler_read(&m, &opt.scaler)) skipped++;
                else opt.steps++;
            }
            loss_sum += loss; loss_count++;
            if (!boundary) continue;${grad_norm_read}

            double mean_loss = loss_sum / loss_count;
            epoch_loss_sum += mean_loss; epoch_loss_count++;
            if (!args.quiet) progress_step(&prog, (int)rs.epoch, index / ACCUMULATE, mean_loss, (int64_t)B * loss_count);
            loss_sum = 0; loss_count = 0;
${log_step}
            if (stop) break;
]==],
  sample_fn = "${sample_fn}",
  summary_extra = [==[
    (void)skipped;   // 16-mixed's summary (train_summary below) reports it
    if (args.cuda_graph && !args.quiet)
        printf("--cuda-graph: %lld graph launches\n--cuda-graph: %lld graphs captured\n", (long long)m.graph_launches, (long long)m.graph_captures);${user_metrics_summary}
]==],
}

-- model.h's sampling declarations and model.cu's decode step for the lowered table's
-- entry point (gen/entries.lua), or the macros that say there is none: the C backend's
-- decode step (gen/emit_c.lua's sample_code) on the device, one kernel per op and
-- position (gen/ops_cuda.lua's `step` rules), the arena in float (device memory), the
-- logits of the last position copied back to the host.  `ctx` is the kernels' context.
local function sample_code(l, ctx)
  local e = require("emit_c").entry(l)
  if not e or e.refused then return host_c.no_sample(e and e.refused) end
  local g, st = l.graph, l.state
  local s = host_c.step_context(e)
  s.lit, s.hash = literal, fnv
  function s.kernel(kind, params, body)
    return ctx.kernel { kind = kind .. "_" .. s.round, ops = {}, params = params, body = body }
  end
  function s.launch(k, args, blocks, threads)
    return ctx.launch(k, {}, args, { blocks = blocks, threads = threads })
  end
  -- a parameter read in another format than its storage's (a 16-bit state, or rounded by
  -- a cast: autocast's bf16 weights) is read from a float copy after the token-dependent
  -- tensors, converted by model_sample_begin (as the C backend's)
  local compute, state_fmt = l.settings.compute, l.settings.state
  local copies, size, declared = {}, e.size, {}
  function s.param(t)
    local v = require("entries").param_view(t, e.producer, e.fmt)
    local f = v.fmt or state_fmt
    local p = st.by_name[v.param]
    local base
    if f ~= compute or state_fmt ~= compute then
      local key = v.param .. "_" .. f
      if not declared[key] then
        local k = ctx.kernel { kind = "dec_load_" .. f, ops = {}, params = "float *__restrict__ y, const state_t *__restrict__ x, int n",
          body = string.format("%s y[i] = so_round_%s(state_widen(x[i]));",
            "for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)", f) }
        copies[#copies + 1] = string.format("    // %s %s as %s", util.c_comment(v.param),
          util.shape_str(g.param_by_name[v.param].shape), f)
        for _, x in ipairs(ctx.launch(k, {}, { { "void *", string.format("(void *)(m->d_decode + %d)", size) },
            { "void *", string.format("(void *)(m->d_params + %d)", p.offset) }, { "int", p.numel } },
            { blocks = string.format("lc_blocks(%d, 256)", p.numel), threads = 256 })) do
          copies[#copies + 1] = "    " .. x
        end
        declared[key] = string.format("(D + %d)", size)
        size = size + (p.numel + 15) // 16 * 16
      end
      base = declared[key]
    else
      base = string.format("((float *)m->d_params + %d)", p.offset)
    end
    return { base = base, shape = v.shape, strides = v.strides }
  end
  function s.refuse(node, why)
    diag.fatal(node.where, string.format("%s cannot be generated position by position: %s: %s", e.name,
      node.module and node.module.call_text or node.op, why))
  end
  local body = {}
  for _, node in ipairs(e.steps) do
    local rule = ops_cuda.step[node.op]
    if not rule then s.refuse(node, "the CUDA backend has no decode step for " .. node.op) end
    s.round = e.round[node.out] or "f32"
    body[#body + 1] = "    " .. node_comment(g, node)
    body[#body + 1] = "    " .. host_c.shapes_comment(node) .. string.format("  (position t of dim %d)", e.axis[node.out] - 1)
    for _, x in ipairs(rule(s, node)) do body[#body + 1] = "        " .. x end
  end
  local lg = e.bufs[e.logits]
  local where = string.format("%s:%d", e.where.file, e.where.line)
  local c = {
    "int model_sample_begin(Model *m) {",
    "    if (!m->d_decode && cudaMalloc((void **)&m->d_decode, sizeof(float) * SAMPLE_ARENA + 64) != cudaSuccess) return -1;",
    "    if (!m->h_logits && cudaMallocHost((void **)&m->h_logits, sizeof(float) * SAMPLE_VOCAB) != cudaSuccess) return -1;",
  }
  if #copies > 0 then
    c[#c + 1] = "    // the parameters as the step reads them (forward's casts), from this run's weights"
    for _, x in ipairs(copies) do c[#c + 1] = x end
  end
  for _, x in ipairs {
    "    return 0;",
    "}",
    "",
    string.format("// %s  <- %s: %s (sampling), one position at a time, each op a kernel on the compute stream", e.name,
      util.c_comment(where), util.c_comment(string.format("autoregress(logits %s, tokens %s, temperature %g, top_k %d)",
        util.shape_str(e.logits.shape), util.shape_str(e.idx.shape), e.temperature, e.top_k))),
    "const real *model_sample_step(Model *m, const int64_t *tok, int from, int n) {",
    "    float *D = m->d_decode;",
    "    for (int t = from; t < n; t++) {",
  } do c[#c + 1] = x end
  for _, x in ipairs(body) do c[#c + 1] = x end
  for _, x in ipairs {
    "    }",
    "    // the last position's logits, back on the host",
    string.format("    LC_CHECK(cudaMemcpyAsync(m->h_logits, D + %d + (size_t)(n - 1) * %d, sizeof(float) * SAMPLE_VOCAB, cudaMemcpyDeviceToHost, STREAM(m->stream)));",
      lg.offset, lg.row),
    "    LC_CHECK(cudaStreamSynchronize(STREAM(m->stream)));",
    "    return m->h_logits;",
    "}",
  } do c[#c + 1] = x end
  return { sample_h = host_c.sample_header(e, size, #copies > 0), sample_body = "\n\n" .. table.concat(c, "\n") }
end

-- train.c's --sample: the C program's (gen/emit_c.lua), the model allocated quietly
local function sample_fn(l)
  local emit_c = require "emit_c"
  local entry = emit_c.entry(l)
  if not (entry and not entry.refused) then return emit_c.NO_SAMPLE_FN end
  local fn, n = emit_c.SAMPLE_FN:gsub("model_alloc%(&m%)", "model_alloc(&m, 1)")
  assert(n == 1, "sample_only's model_alloc")
  return fn
end

-- DDP over NCCL (gen/strategy.lua; runtime/ddp.h, runtime/ddp_nccl.h): the CUDA
-- program's blocks with the ranks in them, as the C program's (gen/emit_c.lua's
-- ddp_blocks): MPI up and each rank on its node-local GPU, rank 0 alone printing, logging
-- and writing checkpoints, every rank from rank 0's parameters and buffers (ncclBroadcast
-- on the devices, after model_init put each rank's own there), each rank's
-- DistributedSampler shard; the buckets' all-reduces queued inside backward (model.cu) on
-- NCCL's stream; the stop request agreed on in the step's all-reduce; the step's loss
-- over the ranks where it is shown.  `t` (the loop's values) gets the test's weights on
-- every rank's device.
-- FSDP's SHARD_GRAD_OP (runtime/ddp_nccl.h's fsdp_nccl_*): the same ranks, no buckets (the
-- step reduce-scatters the gradients after backward and all-gathers the parameters after
-- the update: model.cu), each rank's optimizer state its part of the arena on the device,
-- and a checkpoint a full state dict (Fabric's default): the state's parts gathered on rank
-- 0 (`opt_states`: their names), which writes them.
local function ddp_blocks(l, loop, t, buckets, state_fmt, opt_states, cf)
  local s = l.strategy
  local fsdp = s.kind == "fsdp"
  local b = {}
  for k, v in pairs(TRAIN_BLOCKS) do b[k] = v end
  local emit_c = require "emit_c"
  b.header = b.header .. "#include \"ddp_nccl.h\"\n"
  -- the JIT check (no device, no MPI), then the ranks
  local jit = TRAIN_BLOCKS.main_start:match("^(.-\n    }\n)")
  assert(jit and jit:find("--jit-check", 1, true))
  b.main_start = jit .. emit_c.ranks_start(s) .. string.format([==[
    // --cuda-graph captures NCCL's collectives with the step: a graph's launch is a
    // collective, so every rank must capture the same steps (NCCL's rule)
    if (ddp_any(args.cuda_graph) != args.cuda_graph)
        ddp_die("--cuda-graph: give it to every rank or to none (a graph's launch is one of NCCL's collectives)");
    ddp_nccl_init();   // this rank's GPU (its local rank's), NCCL's communicator from rank 0's id
]==])
  local fmt = ({ f32 = "LC_F32", bf16 = "LC_BF16", f16 = "LC_F16" })[state_fmt]
  local setup
  local full = s.sharding == "FULL_SHARD"
  -- (FULL_SHARD: the host's whole weights to the device, `m` the Model's pointer or value:
  -- this rank's parts of the parameters once they are sharded)
  local function upload(mm)
    return (string.format([==[
    if (fsdp_nccl_param_shard()) {   // FSDP FULL_SHARD, sharded: this rank's parts of the parameters
        fsdp_nccl_keep_params_host(M.params);
        ddp_nccl_memcpy(M.d_buffers, M.buffers, sizeof(state_t) * NUM_BUFFERS);
        ddp_nccl_memcpy(M.d_counters, M.counters, sizeof(int64_t) * NUM_COUNTERS);
    } else {
        model_upload(%s);
    }
]==], mm == "m->" and "m" or "&m"):gsub("M%.", mm))
  end
  if full then
    local st = l.state
    local rows = emit_c.unit_rows(l)
    local k = #opt_states
    setup = string.format([==[
    // FSDP (FULL_SHARD, %s): each unit cut into one part per rank;
    // this rank's parameters, averaged gradients and optimizer state are its parts (the
    // parameters once the run has its starting weights: resume_steps)
    fsdp_nccl_init(m.d_params, m.d_grads, COMPUTE_COPY ? m.d_compute : NULL, NUM_PARAMS, %s, sizeof(opt_t), m.stream);%s
    // the units: { first element, elements } of the parameter arena, each all-gathered into
    // m.d_params for the ops that read it, and where the backward writes its gradients in
    // m.d_grads (%d buffer%s of the largest unit's size), reduce-scattered from there
    static const fsdp_unit units[] = {
%s
    };
    fsdp_nccl_set_units(units, %d);
    if (!args.quiet) {   // what each rank holds on its device (one rank: the unsharded figures)
        double es = sizeof(state_t), ps = es * fsdp_nccl_shard_len(), pg = es * fsdp_nccl_gathered_len(),
               gb = es * (%d + ddp_world()), ss = (double)sizeof(opt_t) * fsdp_nccl_shard_len();
        printf("fsdp: FULL_SHARD over %%d ranks (NCCL); per rank on the device: parameters %%.0f B (shard %%.0f B + the largest unit gathered %%.0f B), "
               "gradients %%.0f B (the units' buffers) + %%.0f B (shard), optimizer state %%.0f B (%d buffer%s of %%.0f B); "
               "parameters+gradients+optimizer %%.0f B, of which sharded %%.0f B\n",
               ddp_world(), ps + pg, ps, pg, gb, ps, %d * ss, ss, ps + pg + gb + ps + %d * ss, 2 * ps + %d * ss);
    }
]==], util.c_comment(s.policy), fmt,
      cf and string.format("\n    fsdp_nccl_set_compute(%s);   // the GEMMs' compute copy, sharded as the parameters", cf == "bf16" and "LC_BF16" or "LC_F16") or "",
      st.grad_slots, st.grad_slots == 1 and "" or "s", table.concat(rows, "\n"), #rows,
      st.grad_slots * st.unit_max, k, k == 1 and "" or "s", k, k, k)
    b.resume_steps = string.format("    fsdp_nccl_shard_params((void **)&m.d_params, (void **)&m.d_grads, COMPUTE_COPY ? (void **)&m.d_compute : NULL, %d);   // FSDP FULL_SHARD: from here on this rank holds its parts of the parameters\n",
      st.grad_slots * st.unit_max) .. TRAIN_BLOCKS.resume_steps
    b.weights_to_device = upload("m->")
  elseif fsdp then
    setup = string.format([==[
    // FSDP (SHARD_GRAD_OP): the flat parameter arena cut into one part per rank; this
    // rank's optimizer state and averaged gradients are its part's
    fsdp_nccl_init(m.d_params, m.d_grads, COMPUTE_COPY ? m.d_compute : NULL, NUM_PARAMS, %s, sizeof(opt_t), m.stream);
    if (!args.quiet) {   // what each rank holds on its device (one rank: the unsharded figures)
        double pb = (double)sizeof(state_t) * NUM_PARAMS, ss = (double)sizeof(opt_t) * fsdp_shard_len();
        printf("fsdp: SHARD_GRAD_OP over %%d ranks (NCCL); per rank on the device: parameters %%.0f B, gradients %%.0f B (backward's arena), "
               "optimizer state %%.0f B (%d buffer%s of %%.0f B); parameters+gradients+optimizer %%.0f B, of which sharded %%.0f B\n",
               ddp_world(), pb, pb, %d * ss, ss, 2 * pb + %d * ss, %d * ss);
    }
]==], fmt, #opt_states, #opt_states == 1 and "" or "s", #opt_states, #opt_states, #opt_states)
  else
    local rows = emit_c.bucket_rows(buckets)
    setup = string.format([==[
    // DDP: the gradient buckets (PyTorch DDP's reverse parameter order, about %s MB each):
    // { first element, elements } of m.d_grads, each all-reduced on NCCL's stream once queued
    static const ddp_bucket buckets[] = {
%s
    };
    ddp_nccl_set_buckets(buckets, %d, m.d_grads, NUM_PARAMS, %s, m.stream);
]==], tostring(s.cap_mb), table.concat(rows, "\n"), #rows, fmt)
  end
  b.model_setup = TRAIN_BLOCKS.model_setup:gsub("    model_init%(&m, args.seed%);\n", function(line)
    return line .. [==[
    // every rank starts from rank 0's parameters and buffers (DDP's broadcast at wrap time),
    // device to device over NCCL (model_init put this rank's own there)
    ddp_nccl_broadcast(m.d_params, sizeof(state_t) * NUM_PARAMS, m.stream);
    ddp_nccl_broadcast(m.d_buffers, sizeof(state_t) * NUM_BUFFERS, m.stream);
    ddp_nccl_broadcast(m.d_counters, sizeof(int64_t) * NUM_COUNTERS, m.stream);
    if (COMPUTE_COPY) ddp_nccl_broadcast(m.d_compute, sizeof(uint16_t) * NUM_PARAMS, m.stream);
    model_download(&m);   // the host's copies rank 0's too
]==] .. setup end)
  if full then
    b.save_from_device = [==[
    // FSDP FULL_SHARD: a full state dict (Fabric's default): every rank's parts of the
    // parameters and of the optimizer state gathered whole on rank 0's host, which writes them
    fsdp_nccl_gather_host(fsdp_nccl_param_shard(), sizeof(state_t), m->params);
    ddp_nccl_memcpy(m->buffers, m->d_buffers, sizeof(state_t) * NUM_BUFFERS);
    ddp_nccl_memcpy(m->counters, m->d_counters, sizeof(int64_t) * NUM_COUNTERS);
    optimizer_download(o, m);   // (the state's parts gathered as the parameters': model.cu)
    if (ddp_rank() != 0) return;
]==]
  elseif fsdp and #opt_states > 0 then
    local gather, free = {}, {}
    for _, st in ipairs(opt_states) do
      gather[#gather + 1] = string.format("        full.%s = fsdp_gather(o->%s + fsdp_lo());", st, st)
      free[#free + 1] = string.format("        free(full.%s);", st)
    end
    b.save_from_device = string.format([==[
    // FSDP: a full state dict (Fabric's default): every rank sends its part of the optimizer
    // state to rank 0, which writes the whole tensors as one rank would
    static int gathered = 0;
    if (!gathered) {
%s        Optimizer full = *o;
%s
        gathered = 1;
        if (ddp_rank() == 0) save_checkpoint(path, m, &full, rs, ls);
        gathered = 0;
%s
        return;
    }
]==], TRAIN_BLOCKS.save_from_device:gsub("\n    ", "\n        "):gsub("^    ", "        "), table.concat(gather, "\n"), table.concat(free, "\n"))
  else
    b.save_from_device = string.format("    if (ddp_rank() != 0) return;   // %s: rank 0 writes the checkpoints (every rank holds the same state)\n",
      fsdp and "FSDP" or "DDP") .. TRAIN_BLOCKS.save_from_device
  end
  -- the loop: the stop request is known once the step's loss is (its all-reduce ran)
  local mb, n = TRAIN_BLOCKS.micro_batch:gsub([==[
                if %(args.max_steps && rs.step >= args.max_steps%) stop = 1;
                else if %(signals_stop_requested%(%)%) stop = 2;
]==], [==[
                if (args.max_steps && rs.step >= args.max_steps) stop = 1;
]==])
  assert(n == 1)
  mb, n = mb:gsub("            real loss = model_loss_wait%(&m%);   // the step has run\n",
    "            ddp_watch(\"the step's gradient all-reduce (NCCL)\");   // --ddp-timeout: another rank died or is stuck\n" ..
    "            real loss = model_loss_wait(&m);   // the step has run (with its gradients' all-reduce)\n" ..
    "            ddp_unwatch();\n")
  assert(n == 1)
  -- (the CUDA loop has staged the next batch: this step's batch is `index`)
  local ranks_step = loop.ranks_step:gsub("db%.index", "index")
  if #(l.trace.metrics or {}) > 0 then
    -- train.log's step accumulator read back (the copy queued with the step where its row is
    -- logged, else now) before step_over_ranks combines every rank's
    local n
    ranks_step, n = ranks_step:gsub("(\n( *)mean_loss = step_over_ranks)", "\n%2model_user_metrics_read(&m, UM_STEP, um_step.value, &um_step.weight);   // this rank's (train.log)%1", 1)
    assert(n == 1, "the step's values over the ranks")
  end
  mb, n = mb:gsub([==[
            if %(!args.quiet%) progress_step%(&prog, %(int%)rs.epoch, index / ACCUMULATE, mean_loss, %(int64_t%)B %* loss_count%);
]==], function()
    return ranks_step .. "            if (!args.quiet) progress_step(&prog, (int)rs.epoch, index / ACCUMULATE, mean_loss, (int64_t)B * loss_count * ddp_world());\n"
  end)
  assert(n == 1)
  -- the next batch is read before the stop is known: a stop goes back to before it, so the
  -- checkpoint continues with it
  mb, n = mb:gsub("            have = 0;\n", "            loader_state unstaged = loader_state_get(train_loader);   // DDP: where a stop goes back to\n%0", 1)
  assert(n == 1)
  mb, n = mb:gsub("            if %(stop%) break;\n$", [==[
            if (!stop && stop_requested) {
                stop = 2;
                if (loader_seek(train_loader, &unstaged, &err)) die(err.msg);   // the batch read ahead is the resumed run's first
            }
            if (stop) break;
]==])
  assert(n == 1)
  b.micro_batch = mb
  b.summary_extra = TRAIN_BLOCKS.summary_extra .. [==[
    if (!args.quiet) printf("ddp: %d ranks over NCCL; all-reduced %.3f MB per rank in this run\n", ddp_world(), ddp_nccl_reduced_bytes / 1e6);
]==]
  if full then
    b.summary_extra = TRAIN_BLOCKS.summary_extra .. [==[
    if (!args.quiet) printf("fsdp: %d ranks over NCCL; reduce-scattered and all-gathered %.3f MB per rank in this run (units all-gathered: %.3f MB)\n",
                            ddp_world(), ddp_nccl_reduced_bytes / 1e6, fsdp_nccl_gathered_bytes / 1e6);
]==]
  elseif fsdp then
    b.summary_extra = TRAIN_BLOCKS.summary_extra .. [==[
    if (!args.quiet) printf("fsdp: %d ranks over NCCL; reduce-scattered and all-gathered %.3f MB per rank in this run\n", ddp_world(), ddp_nccl_reduced_bytes / 1e6);
]==]
  end
  -- the test's weights: rank 0 reads the best checkpoint, every rank gets them on its device
  -- (the final weights are on every rank's device already)
  if t.test_weights:find("load_weights", 1, true) then
    t.test_weights = t.test_weights .. (full and ("\n" .. upload("m."):gsub("\n    ", "\n        "):gsub("^    ", "        "):gsub("\n$", ""))
      or "\n        model_upload(&m);   // rank 0's weights on every rank's device")
  else
    t.test_weights = "        // (the final weights, the same on every rank's device)"
  end
  return b
end

-- values[name] for each of `names`: what one template takes of a larger table
-- (template.fill then checks that every one of them fills a hole)
local function pick(values, names)
  local t = {}
  for _, n in ipairs(names) do t[n] = values[n] end
  return t
end

-- fabric.devices (or loom's --devices=): the ordinal of the one GPU the program runs on,
-- or nil and why (a ddp program's ranks pick theirs: 0 here)
local function device_ordinal(sp, override)
  -- several ranks (ddp over NCCL): each takes its node-local rank's GPU at start
  if require("strategy").requested(sp, { devices = override }) ~= "single" then return 0 end
  local d = override or sp.fabric.devices
  if d == "auto" or d == 1 then return 0 end
  if type(d) == "table" and #d == 1 then return d[1] end
  local shown = type(d) == "table" and ("{" .. table.concat(d, ", ") .. "}") or tostring(d)
  return nil, string.format("devices = %s: the CUDA backend runs on one GPU per process (devices = 1, 'auto', or {k} for GPU k; " ..
    "N > 1: N ddp ranks)", shown)
end

-- torch.set_float32_matmul_precision: "high" and "medium" both let cuBLASLt compute
-- float32 GEMMs in TF32 (CUBLAS_COMPUTE_32F_FAST_TF32), as PyTorch does on CUDA
local function tf32_of(sp)
  local mp = sp.fabric.float32_matmul_precision or "highest"
  return mp ~= "highest" and 1 or 0, mp
end
emit.tf32_of = tf32_of

local function members_comment(g, grp, lines, suffix)
  local list = {}
  if grp.head and suffix == "" then list[1] = grp.head end   -- the producer's backward runs on its own
  for _, m in ipairs(grp.members) do list[#list + 1] = m end
  if #list > 1 then lines[#lines + 1] = string.format("    // fused (gen/fuse.lua): %d ops, one kernel%s", #list, suffix) end
  for _, m in ipairs(list) do lines[#lines + 1] = node_comment(g, m, suffix) end
end


-- A node the step runs no code for: a view, or a cast folded into its neighbours.
local function skipped(pp, node) return require("ops")[node.op].alias or pp.folded[node] end

-- The forward's launches, op by op (a fused group where its first member runs); the
-- trace's nodes first..last (default: all of them).
-- FSDP FULL_SHARD (gen/plan.lua's units): an op's launches read its parameters in the one
-- buffer their unit is gathered into, so before an op that reads another unit than the
-- one gathered last, that unit is all-gathered (in forward, and again from the first in
-- backward: reshard_after_forward), as the C program's (gen/emit_c.lua's gather_units).
-- Returns gather(node, lines, phase), which runs `lines` (a function giving an op's lines)
-- and prepends the gather its reads need; without FULL_SHARD, lines() alone.
local function unit_gathers(l, e)
  local full = l.strategy and l.strategy.sharding == "FULL_SHARD"
  local st, cur = l.state, nil
  local function unit_name(u) return st.units[u].key == "" and "the root's" or ("'" .. st.units[u].key .. "'") end
  return function(node, lines_of, phase)
    if not full then return lines_of() end
    e.units_read = {}
    local lines = lines_of()
    local read, names = e.units_read, {}
    e.units_read = nil
    local u
    for k in pairs(read) do u = u and math.min(u, k) or k; names[#names + 1] = string.format("unit %s", unit_name(k)) end
    if #names > 1 then
      table.sort(names)
      diag.fatal(node.where, string.format("fsdp FULL_SHARD: %s reads parameters of two units at once, %s (a weight tied across units); " ..
        "make them one unit (auto_wrap_policy) or use sharding_strategy = 'SHARD_GRAD_OP'", node.op, table.concat(names, " and ")))
    end
    if u and u ~= cur then
      table.insert(lines, 1, string.format("fsdp_nccl_gather_unit(%d);   // FSDP: unit %d (%s) all-gathered for its %s", u - 1, u - 1, unit_name(u), phase))
      cur = u
    end
    return lines
  end
end

local function forward_code(l, e, first, last)
  local g, pp, fz, trace = l.graph, l.pp, l.fuse, l.trace
  local fwd = {}
  local gather = unit_gathers(l, e)
  for i = first or 1, last or #trace.nodes do
    local node = trace.nodes[i]
    local rule = ops_cuda[node.op]
    local grp = fz.group_of[node]
    if not skipped(pp, node) and not (grp and node ~= (grp.head or grp.first)) then
      fwd[#fwd + 1] = ""
      e.begin(node)
      if grp then members_comment(g, grp, fwd, "") else fwd[#fwd + 1] = node_comment(g, node, "") end
      local lines = gather(node, function()
        if grp and not grp.head then return fuse_cuda.group_forward(e, grp, fz) end
        e.tail = grp
        local x = rule.forward(e, node)
        e.tail = nil
        return x
      end, "forward")
      for _, line in ipairs(indent(lines)) do fwd[#fwd + 1] = line end
    end
  end
  return fwd
end

-- The backward's launches: the loss's seed, then each op's backward in autodiff's order
-- (a fused group's where the earliest of its members' would run).  `nodes`: the backward's
-- (default autodiff's, the loss's; a training_step's backward gives its own).
local function backward_code(l, e, loss, scaling, buckets, nodes)
  local g, pp, fz = l.graph, l.pp, l.fuse
  local order = nodes or l.autodiff.backward
  local bwd = {}
  e.begin(nil)
  local dl = e.grad(loss)
  local fops = { { "dl", dl, "w" } }
  -- the backward's seed, read on the device (a captured step replays it): the loss scale
  -- (16-mixed's, on the device; else 1) over the ACCUMULATE micro-batches, in float as
  -- the C program's (real)scale / ACCUMULATE
  local fk = e.kernel { kind = "loss_seed", ops = fops, params = "long long n, const float *scale, const float *divisor",
    body = "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) st_dl(i, (scale ? *scale : 1.0f) / *divisor);" }
  for _, line in ipairs(indent(e.launch(fk, fops, { { "long long", "1" }, { "void *", scaling and "&m->d_scaler->scale" or "NULL" },
      { "void *", "&((step_consts *)m->d_consts)->loss_divisor" } }, { blocks = 1, threads = 32 }))) do
    bwd[#bwd + 1] = line
  end
  -- a group's backward runs where the earliest of its pointwise members' would
  local bwd_at = {}
  for _, node in ipairs(order) do
    local grp = fz.group_of[node]
    if grp and node ~= grp.head then bwd_at[grp] = node end
  end
  -- DDP (gen/strategy.lua): each bucket's all-reduce is queued after the last of the
  -- launches that write its gradients (a fused group's backward runs at its last member's place)
  local ready_at = {}
  local index = {}
  for k, node in ipairs(order) do index[node] = k end
  local function place(k)
    local node = order[k]
    local grp = fz.group_of[node]
    if grp and node ~= grp.head then return index[bwd_at[grp]] end
    return k
  end
  if buckets then
    for i, b in ipairs(buckets) do
      local at = 0
      for _, name in ipairs(b.params) do
        local k = l.strategy.last[name]
        at = math.max(at, k and place(k) or math.huge)
      end
      if at ~= math.huge then   -- (else ddp_nccl_finish_grads starts it)
        ready_at[at] = ready_at[at] or {}
        table.insert(ready_at[at], i - 1)
      end
    end
  end
  -- FSDP FULL_SHARD: each unit's gradients reduce-scattered out of its buffer right after
  -- the launches that finish them (a unit whose last write cannot be placed: in
  -- fsdp_nccl_finish_grads); a unit no gradient reaches has nothing to reduce
  local gather = unit_gathers(l, e)
  local unit_ready = {}
  if l.strategy and l.strategy.sharding == "FULL_SHARD" then
    for u, unit in ipairs(l.state.units) do
      if unit.slot and unit.to ~= math.huge then
        local at = place(unit.to)
        unit_ready[at] = unit_ready[at] or {}
        table.insert(unit_ready[at], u - 1)
      end
    end
  end
  for k, node in ipairs(order) do
    local rule = ops_cuda[node.op]
    local grp = fz.group_of[node]
    if grp and node == grp.head then grp = nil end
    if not skipped(pp, node) and not (grp and bwd_at[grp] ~= node) then
      bwd[#bwd + 1] = ""
      e.begin(node)
      if grp then members_comment(g, grp, bwd, "  (backward)") else bwd[#bwd + 1] = node_comment(g, node, "  (backward)") end
      local lines = gather(node, function()
        if grp then return fuse_cuda.group_backward(e, grp, fz) end
        return rule.backward(e, node)
      end, "backward")
      for _, line in ipairs(indent(lines)) do bwd[#bwd + 1] = line end
    end
    for _, i in ipairs(ready_at[k] or {}) do
      bwd[#bwd + 1] = string.format("    ddp_nccl_grad_ready(%d);   // DDP: bucket %d's gradients are queued: its all-reduce follows on the NCCL stream", i, i)
    end
    for _, u in ipairs(unit_ready[k] or {}) do
      bwd[#bwd + 1] = string.format("    fsdp_nccl_unit_grads_ready(%d);   // FSDP: unit %d's gradients are final: reduce-scattered on the NCCL stream", u, u)
    end
  end
  return bwd
end

-- backward()'s start (templates/cuda/model.cu.in): the staged batch, the activation gradients zeroed
local BACKWARD_PROLOGUE = [==[
    BatchSlot *slot = &m->slots[m->slot];
    const Batch *db = &slot->dev;
    const int B = slot->B;
    const int training = 1;
    (void)db; (void)B; (void)training;]==]
local DACT_ZERO = "LC_CHECK(cudaMemsetAsync(m->d_dacts, 0, (size_t)DACT_BYTES, STREAM(m->stream)));"

-- step_ops's launches (templates/cuda/model.cu.in): forward, backward, and on a step's
-- last micro-batch the update
local STEP_BODY = [==[
    forward_ops(m, 1);${user_metrics_step}
    backward(m);
    if (boundary) {${ddp_finish}
        if (LOSS_SCALING) scaler_unscale_ops(m);
        optimizer_ops(o, m);${ddp_after_step}
        if (LOSS_SCALING) scaler_update_ops(m);
        model_zero_grad(m);
    }
]==]

-- 16-mixed's GradScaler.unscale_ as a kernel: n gradients (float32) at g times 1/scale,
-- *found set when one is inf or NaN.  Returns its index.
local function unscale_kernel(e)
  return e.kernel { kind = "unscale", ops = {}, params = "float *__restrict__ g, int *found, const float *scale, long long n",
    body = "const float inv_scale = (float)(1.0 / (double)*scale);   // scale.double().reciprocal().float()\n    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {\n" ..
           "        float v = g[i];\n        if (!(fabsf(v) <= 3.402823466e38f)) atomicOr(found, 1);   // inf or NaN\n" ..
           "        g[i] = v * inv_scale;\n    }" }
end

-- A training_step (gen/user_step.lua's segments) on the device, as the C program's
-- model_user_step runs it: each forward run and each backward a function of launches
-- (the ops unfused: gen/pipeline.lua's fuse stage), each optimizer's step its update
-- kernel over its own parameters' runs (the others' are SKIP_RUN) with a set of
-- constants per step call (step_consts.opt[j]: the optimizer's lr and its own count of
-- updates, as optim.c's optimizer_step_NAME gets them), each zero_grad a memset of its
-- runs.  Returns model.cu's functions, step_ops's block, optimizer_consts's body, the
-- state's names, the constants' type and count.
-- 16-mixed (`scaling`): Fabric's one GradScaler, as the C program's optim.c: each
-- backward seeded with the scale, each optimizer's step unscaling its own runs (found_inf
-- over them), its update skipped on inf/nan, then the scale's update; each step call's
-- found_inf kept in ScalerState.found_at[J], which the host reads with the loss
-- (model_user_scaler_read: each optimizer's count of updates taken, o->opt_steps, and the
-- skipped ones).  An optimizer's count at its first step call in a training step is the
-- host's; at a later one it also counts the earlier calls that were taken, known only on
-- the device: the host fills one set of constants per possible count (step_consts.opt past
-- the calls' own) and the kernel consts_pick copies the one the earlier calls' found_at
-- choose into the call's own before its update.
local function user_step_code(l, e, kernels, scratch, scaling)
  local us = require "user_step"
  local g, sp, st, trace = l.graph, l.spec, l.state, l.trace
  local segs = l.autodiff.segments
  -- the step's operands a function's launches name (nvcc refuses a variable set and unused)
  local function PROLOGUE(body)
    local has = function(name) return body:find("%f[%w_]" .. name .. "%f[^%w_]") ~= nil end
    local t = {}
    if has("db") or has("B") then t[#t + 1] = "    BatchSlot *slot = &m->slots[m->slot];" end
    if has("db") then t[#t + 1] = "    const Batch *db = &slot->dev;" end
    if has("B") then t[#t + 1] = "    const int B = slot->B;" end
    if has("training") then t[#t + 1] = "    const int training = 1;" end
    return table.concat(t, "\n")
  end
  local funcs, calls, consts = {}, {}, {}
  local per = us.steps_per(segs)
  local count, nf, nb, states, ctype = {}, 0, 0, nil, nil
  local runs_of, zeroes, zeroed = {}, {}, {}
  for _, o in ipairs(g.step.optimizers) do
    runs_of[o] = us.runs(st.params, o, g.frozen)   -- (train.freeze's parameters: in no run, never updated, decayed or unscaled)
    local z = {}
    for _, r in ipairs(runs_of[o]) do
      z[#z + 1] = string.format("    LC_CHECK(cudaMemsetAsync(m->d_grads + %d, 0, sizeof(state_t) * %d, STREAM(m->stream)));   // %s",
        r.begin, r.finish - r.begin, r.names)
    end
    zeroes[o] = table.concat(z, "\n")
  end
  local nsteps, ncalls = 0, 0
  for _, s in ipairs(segs) do if s.kind == "step" then ncalls = ncalls + 1 end end
  local variants = ncalls   -- (16-mixed: the next free set of constants past the calls' own)
  local calls_of = {}       -- optimizer → its step calls so far (their J)
  local unscale = scaling and unscale_kernel(e)
  local pick = scaling and e.kernel { kind = "consts_pick", ops = {},
    params = "char *__restrict__ live, const char *__restrict__ sets, const int *found_at, unsigned long long earlier, int size",
    body = table.concat({
      "// a training_step's optimizer at its later step call under 16-mixed: its count of updates",
      "    // is the host's plus its earlier calls in this step that the GradScaler did not skip",
      "    if (threadIdx.x != 0 || blockIdx.x != 0) return;",
      "    int t = 0;",
      "    for (int i = 0; i < 64; i++) if ((earlier >> i) & 1ull) t += !found_at[i];",
      "    for (int b = 0; b < size; b++) live[b] = sets[(long long)t * size + b];" }, "\n") }
  if scaling and ncalls > 64 then
    diag.fatal(g.step.where, string.format("a training_step with %d optimizer steps under 16-mixed: the CUDA backend takes at most 64", ncalls))
  end
  for _, s in ipairs(segs) do
    if s.kind == "forward" then
      local fn = string.format("step_forward_%d", nf)
      nf = nf + 1
      local body = table.concat(forward_code(l, e, s.first, s.last), "\n")
      funcs[#funcs + 1] = string.format("\n// the training_step's ops %d..%d, in the order the spec runs them\nstatic void %s(Model *m) {\n%s\n%s\n}",
        s.first, s.last, fn, PROLOGUE(body), body)
      calls[#calls + 1] = string.format("    %s(m);", fn)
    elseif s.kind == "backward" then
      local fn = string.format("step_backward_%d", nb)
      nb = nb + 1
      local body = table.concat(backward_code(l, e, s.loss, scaling, nil, s.nodes), "\n")
      funcs[#funcs + 1] = string.format("\n// fabric.backward(loss) on line %d: %d ops; parameter gradients add up (zero_grad clears them)\n"
        .. "static void %s(Model *m) {\n%s\n    %s\n%s\n}", s.where.line, #s.nodes, fn, PROLOGUE(body), DACT_ZERO, body)
      calls[#calls + 1] = string.format("    %s(m);   // fabric.backward, line %d", fn, s.where.line)
    elseif s.kind == "step" then
      local o, j = s.opt, nsteps
      nsteps = nsteps + 1
      count[o] = (count[o] or 0) + 1
      -- the optimizer's runs, in one group (index 0 of its constants); the rest SKIP_RUN
      local grp = { index = 0, ratio = 1.0, lr = o.opt.args.lr, weight_decay = o.opt.args.weight_decay or 0,
                    label = string.format("optimizer '%s'", o.name) }
      local runs = {}
      for _, r in ipairs(runs_of[o]) do runs[#runs + 1] = { begin = r.begin, finish = r.finish, group = grp } end
      e.begin(nil)
      local earlier = calls_of[o] or {}
      calls_of[o] = earlier
      -- 16-mixed at a later call: its constants for each count the earlier calls may leave
      local sets = scaling and #earlier > 0 and variants
      local host, ops, names, ct = optimizer(sp, kernels, e, scratch, scaling, { groups = { grp }, runs = runs }, st.nparams, nil,
        { opt = o.opt, kind = "_" .. o.name, index = j, host_index = sets and string.format("%d + t", sets) })
      states, ctype = states or names, ct
      local fn = string.format("step_update_%d", j)
      local body = {}
      if scaling then
        -- GradScaler.unscale_(opt): its own runs only (another optimizer's gradients stay scaled)
        body[#body + 1] = string.format("    // GradScaler.unscale_(%s) (scaler.step's first half): its gradients times 1/scale, found_inf over them", o.name)
        body[#body + 1] = "    LC_CHECK(cudaMemsetAsync(&m->d_scaler->found_inf, 0, sizeof(int32_t), STREAM(m->stream)));"
        body[#body + 1] = "    void *found = &m->d_scaler->found_inf, *scale = &m->d_scaler->scale;"
        for _, run in ipairs(runs_of[o]) do
          body[#body + 1] = string.format("    {   // %s", run.names)
          body[#body + 1] = string.format("        void *g = m->d_grads + %d;", run.begin)
          body[#body + 1] = string.format("        long long n = %d;", run.finish - run.begin)
          body[#body + 1] = "        void *args[] = { &g, &found, &scale, &n };"
          body[#body + 1] = string.format("        lc_launch(&m->kernels[%d], lc_blocks(n, 256), 256, m->stream, args);", unscale)
          body[#body + 1] = "    }"
        end
        if sets then
          local mask = 0
          for _, k in ipairs(earlier) do mask = mask | (1 << k) end
          body[#body + 1] = string.format("    {   // %s's count of updates: the host's plus its earlier calls (%s) not skipped, choosing its constants",
            o.name, table.concat(earlier, ", "))
          body[#body + 1] = string.format("        void *live = ((step_consts *)m->d_consts)->opt + %d, *sets = ((step_consts *)m->d_consts)->opt + %d, *found_at = m->d_scaler->found_at;", j, sets)
          body[#body + 1] = string.format("        unsigned long long earlier = 0x%xull;", mask)
          body[#body + 1] = string.format("        int size = (int)sizeof(%s);", ct)
          body[#body + 1] = "        void *args[] = { &live, &sets, &found_at, &earlier, &size };"
          body[#body + 1] = string.format("        lc_launch(&m->kernels[%d], 1, 32, m->stream, args);", pick)
          body[#body + 1] = "    }"
        end
      end
      body[#body + 1] = ops
      if scaling then
        body[#body + 1] = string.format("    // this call's found_inf, for the host (model_user_scaler_read); then GradScaler.update()")
        body[#body + 1] = string.format("    LC_CHECK(cudaMemcpyAsync(&m->d_scaler->found_at[%d], &m->d_scaler->found_inf, sizeof(int32_t), cudaMemcpyDeviceToDevice, STREAM(m->stream)));", j)
        body[#body + 1] = "    scaler_update_ops(m);"
      end
      funcs[#funcs + 1] = string.format("\n// %s:step() on line %d: the update of %s%s\nstatic void %s(Optimizer *o, Model *m) {\n%s\n}",
        o.name, s.where.line, table.concat(o.params, ", "), scaling and ", through the GradScaler" or "", fn, table.concat(body, "\n"))
      calls[#calls + 1] = string.format("    %s(o, m);   // %s:step(), line %d", fn, o.name, s.where.line)
      local lit = function(v) return util.c_float(v, "") end
      local k = o.index - 1
      local head = {
        string.format("    {   // %s:step() on line %d: its update %d of %d in each training step", o.name, s.where.line, count[o], per[o]),
        string.format("        const double lr = %s, mom = %s;", lit(o.opt.args.lr), lit(us.momentum(o))),
      }
      if not scaling then
        head[#head + 1] = string.format("        const int64_t step = train_step * %d + %d;   // the optimizer's own count of updates", per[o], count[o] - 1)
        head[#head + 1] = (host:gsub("([^\n]+)", "    %1"))
      elseif not sets then
        head[#head + 1] = string.format("        const int64_t step = o->opt_steps[%d];   // the optimizer's own count of updates (the GradScaler's skipped steps do not count)", k)
        head[#head + 1] = (host:gsub("([^\n]+)", "    %1"))
      else
        head[#head + 1] = string.format("        for (int t = 0; t <= %d; t++) {   // its count: the host's plus the earlier calls taken (t of %d; consts_pick chooses)", #earlier, #earlier)
        head[#head + 1] = string.format("            const int64_t step = o->opt_steps[%d] + t;", k)
        head[#head + 1] = (host:gsub("([^\n]+)", "        %1"))
        head[#head + 1] = "        }"
        variants = variants + #earlier + 1
      end
      head[#head + 1] = "    }"
      consts[#consts + 1] = table.concat(head, "\n")
      earlier[#earlier + 1] = j
    else
      local fn = "zero_grad_" .. s.opt.name
      if not zeroed[fn] then
        zeroed[fn] = true
        funcs[#funcs + 1] = string.format("\n// %s.zero_grad(): its parameters' gradients only\nstatic void %s(Model *m) {\n%s\n}", s.opt.name, fn, zeroes[s.opt])
      end
      calls[#calls + 1] = string.format("    %s(m);   // %s:zero_grad(), line %d", fn, s.opt.name, s.where.line)
    end
  end
  -- 16-mixed: after the step, each call's found_inf into the host's counts
  local reads = {}
  if scaling then
    local j = 0
    for _, s in ipairs(segs) do
      if s.kind == "step" then
        reads[#reads + 1] = string.format("    if (f[%d]) o->skipped++; else o->opt_steps[%d]++;   // %s:step(), line %d", j, s.opt.index - 1, s.opt.name, s.where.line)
        j = j + 1
      end
    end
    funcs[#funcs + 1] = table.concat({ "",
      "// After model_loss_wait: the device's GradScaler into o->scaler, and each step call's",
      "// found_inf: a skipped update counts in o->skipped, a taken one in its optimizer's o->opt_steps",
      "void model_user_scaler_read(Model *m, Optimizer *o) {",
      "    (void)model_scaler_read(m, &o->scaler);",
      "    const int32_t *f = m->h_scaler->found_at;",
      table.concat(reads, "\n"),
      "}" }, "\n")
  end
  calls[#calls + 1] = "    model_zero_grad(m);   // every gradient, for the next training step (the C program's loop does too)"
  calls[#calls + 1] = "    (void)boundary;   // (no accumulation with a training_step)"
  calls[#calls + 1] = "    // (the one-loss step's parts, unused here)"
  calls[#calls + 1] = "    (void)backward; (void)optimizer_ops; (void)scaler_unscale_ops; (void)scaler_update_ops;"
  return {
    ops = "\n\n// ---------------------------------------------------------------------------\n" ..
      string.format("// train.training_step (%s:%d) on the device: its parts, which step_ops runs in the spec's order\n",
        util.c_comment(sp.file), g.step.where.line) .. table.concat(funcs, "\n"),
    body = table.concat(calls, "\n") .. "\n",
    consts = "    const int64_t train_step = step;   // the training steps so far\n    (void)lr; (void)mom;   // (each optimizer's own, below)\n" ..
      (scaling and "    (void)train_step;   // (16-mixed: each optimizer's count of updates is its own, o->opt_steps)\n" or "") ..
      table.concat(consts, "\n"),
    states = states, ctype = ctype, count = string.format("[%d]", variants),
    ncalls = ncalls,
  }
end

-- text as the lines of a C string literal
local function quote(text)
  local quoted = {}
  for line in (text .. "\n"):gmatch("(.-)\n") do
    quoted[#quoted + 1] = "    " .. util.c_string(line .. "\n")
  end
  return table.concat(quoted, "\n")
end

-- The kernels, as C string literals (each #includes the prelude, model.cu's
-- kernel_prelude)
local function kernel_sources(kernels)
  local srcs = {}
  for _, k in ipairs(kernels.list) do
    srcs[#srcs + 1] = string.format("    { %s,\n%s },", util.c_string(k.name), quote(k.src))
  end
  return srcs
end

-- The batch: every field, as the CPU program's model.h declares it, pinned on the host
-- and copied to the device on the copy stream.
local function batch_code(l)
  local b = host_c.batch_tables(l.fields, "float")
  b.copy, b.alloc, b.free = {}, {}, {}
  for _, f in ipairs(l.fields) do
    local per, name = util.numel(f.shape), cname(f.name)
    local ct = f.dtype == "int64" and "int64_t" or "float"
    b.copy[#b.copy + 1] = string.format("    { size_t n = sizeof(%s) * %d * (size_t)B; memcpy(s->host.%s, b->%s, n);\n" ..
      "      LC_CHECK(cudaMemcpyAsync(s->dev.%s, s->host.%s, n, cudaMemcpyHostToDevice, STREAM(m->copy_stream))); }",
      ct, per, name, name, name, name)
    b.alloc[#b.alloc + 1] = string.format("        LC_CHECK(cudaMallocHost((void **)&s->host.%s, sizeof(%s) * %d * BATCH_MAX));", name, ct, per)
    b.alloc[#b.alloc + 1] = string.format("        LC_CHECK(cudaMalloc((void **)&s->dev.%s, sizeof(%s) * %d * BATCH_MAX));", name, ct, per)
    b.free[#b.free + 1] = string.format("        cudaFreeHost(s->host.%s); cudaFree(s->dev.%s);", name, name)
  end
  return b
end

-- The optimizer's state on the device (a host copy for checkpoints), named `states`.
-- `sharded` (fsdp's SHARD_GRAD_OP): each device buffer is this rank's part, runtime/ddp.h's
-- [fsdp_lo(), fsdp_hi()); the host copy stays whole (a checkpoint's full tensors, gathered
-- on rank 0 by ddp_blocks' save, each rank's part kept from them on resume).
local function optimizer_state_code(opt_states, sharded)
  -- where each state's device buffer lives, how long it is, and its copies to and from the
  -- host's whole copy (%s: the state's name; `to_host`'s and `to_device`'s take it twice)
  local layout = sharded == "FULL_SHARD" and {   -- (runtime/ddp_nccl.h: each unit's part, gathered whole on rank 0 for a checkpoint)
    device = "on the device: FSDP FULL_SHARD, this rank's parts of the units",
    len = "fsdp_nccl_shard_len() + 64",
    to_host = "        fsdp_nccl_gather_host(o->d_%s, sizeof(opt_t), o->%s);   // every rank's parts, whole on rank 0's host",
    to_device = "        fsdp_nccl_keep_host(o->d_%s, sizeof(opt_t), o->%s);   // this rank's parts of the whole tensors",
  } or sharded and {
    device = "on the device: FSDP, this rank's part [fsdp_lo(), fsdp_hi())",
    len = "fsdp_shard_len() + 64",
    to_host = "        LC_CHECK(cudaMemcpyAsync(o->%s + fsdp_lo(), o->d_%s, sizeof(opt_t) * (fsdp_hi() - fsdp_lo()), cudaMemcpyDeviceToHost, STREAM(m->stream)));",
    to_device = "        LC_CHECK(cudaMemcpyAsync(o->d_%s, o->%s + fsdp_lo(), sizeof(opt_t) * (fsdp_hi() - fsdp_lo()), cudaMemcpyHostToDevice, STREAM(m->stream)));",
  } or {
    device = "on the device",
    len = "NUM_PARAMS",
    to_host = "        LC_CHECK(cudaMemcpyAsync(o->%s, o->d_%s, sizeof(opt_t) * NUM_PARAMS, cudaMemcpyDeviceToHost, STREAM(m->stream)));",
    to_device = "        LC_CHECK(cudaMemcpyAsync(o->d_%s, o->%s, sizeof(opt_t) * NUM_PARAMS, cudaMemcpyHostToDevice, STREAM(m->stream)));",
  }
  local opt_fields, opt_alloc, opt_copy_h, opt_copy_d, opt_free = {}, {}, {}, {}, {}
  for _, s in ipairs(opt_states) do
    opt_fields[#opt_fields + 1] = string.format("    opt_t *%s;     // NUM_PARAMS, laid out like the parameters (host copy, for checkpoints)", s)
    opt_fields[#opt_fields + 1] = string.format("    opt_t *d_%s;   // %s", s, layout.device)
    opt_alloc[#opt_alloc + 1] = string.format("    LC_CHECK(cudaMallocHost((void **)&o->%s, sizeof(opt_t) * NUM_PARAMS));\n" ..
      "    memset(o->%s, 0, sizeof(opt_t) * NUM_PARAMS);\n    LC_CHECK(cudaMalloc((void **)&o->d_%s, sizeof(opt_t) * %s));\n" ..
      "    LC_CHECK(cudaMemset(o->d_%s, 0, sizeof(opt_t) * %s));", s, s, s, layout.len, s, layout.len)
    opt_copy_h[#opt_copy_h + 1] = string.format(layout.to_host, s, s)
    opt_copy_d[#opt_copy_d + 1] = string.format(layout.to_device, s, s)
    opt_free[#opt_free + 1] = string.format("    cudaFreeHost(o->%s); cudaFree(o->d_%s);", s, s)
  end
  return { fields = opt_fields, alloc = opt_alloc, to_host = opt_copy_h, to_device = opt_copy_d, free = opt_free }
end

-- The precision (the spec's or --precision=), refused unless this backend runs it
local function check_precision(sp, target)
  local prec = target.precision or sp.fabric.precision
  if not emit.PRECISIONS[prec] then
    -- the spec's line when the spec chose it; --precision= has no line to point at
    local where = not target.precision and sp.fabric.where or nil
    diag.fatal(where, string.format("%s is not supported by the CUDA backend yet (32-true, bf16-mixed, 16-mixed, bf16-true, 16-true)",
      target.precision and ("--precision=" .. prec) or ("precision '" .. prec .. "'")))
  end
end

-- Each op of `nodes` this backend lacks, an error at its line; and fabric.devices (a
-- training program's: the exported library runs on the device current at its open)
local function check_nodes_and_device(sp, nodes, target, inference)
  for _, node in ipairs(nodes) do
    if not ops_cuda[node.op] or node.op == "supported" then
      diag.error(node.where, string.format("%s is not supported by the CUDA backend yet", node.attrs.as or node.op))
    else
      local why, whole = ops_cuda.supported(node)
      -- (`whole`: said of the module, or of the op outside one)
      local who = whole and node.module and node.module.forward and node.module.call_text or node.attrs.as or node.op
      if why then diag.error(node.where, string.format("%s: %s is not supported by the CUDA backend yet", who, why)) end
    end
  end
  local device, why = device_ordinal(sp, target.devices)
  if not device and not inference then diag.error(not target.devices and diag.key_where(sp.fabric.where, "devices") or nil, why) end
end

-- What this backend cannot run, said before any work (gen/pipeline.lua's assign stage
-- asks): its precisions, a training step, its ops, one device.
function emit.check(g, target)
  local sp = g.spec
  check_precision(sp, target)
  if not g.loss then
    diag.fatal(sp.model_where, "the spec has no train { ... } with a loss, so there is no training step to generate")
  end
  require("emit_c").check_methods(g)
  if target.detect_anomaly or sp.fabric.detect_anomaly then
    diag.fatal(not target.detect_anomaly and diag.key_where(sp.fabric.where, "detect_anomaly") or nil,
      "detect_anomaly is not supported by the CUDA backend yet (the CPU program has it: --accelerator=cpu)")
  end
  if g.step then require("user_step").check(g, target, target.precision or sp.fabric.precision, "cuda") end
  check_nodes_and_device(sp, g.loss.nodes, target)
  diag.check()
end

-- The same for an inference program (loom export --accelerator=cuda): the precision and
-- the forward's ops (the training step's own settings and devices do not matter there).
function emit.check_inference(g, target)
  check_precision(g.spec, target)
  check_nodes_and_device(g.spec, g.traces.forward.nodes, target, true)
  diag.check()
end

-- What fuses on this backend (gen/fuse.lua's questions, for gen/pipeline.lua's fuse
-- stage): describe(node), the scalar description of a pointwise op, and
-- tail_of(node, reader), how a producer takes an elementwise tail.
function emit.fusion_rules(l)
  local pp = l.pp
  local e = context(l, { list = {}, by_name = {} }, { max = 256 })
  local function describe(n)
    local r = ops_cuda[n.op]
    if r and r.pointwise and not pp.folded[n] then return r.pointwise(n) end
  end
  local function tail_of(n, q)
    local r = ops_cuda[n.op]
    if not r or not r.tail then return nil end
    if r.tail == "epilogue" and q then
      -- cuBLASLt's activations: ReLU, and GELU's tanh approximation (the aux output, the
      -- pre-activation GELU's backward reads, needs N a multiple of 8)
      local gelu = q.op == "gelu" and q.attrs.approximate == "tanh" and n.inputs[2].shape[1] % 8 == 0
      if q.op ~= "relu" and not gelu then return nil end
      -- the GEMM writes the activation's output directly, in the linear output's formats
      local F = e.gemm_format(e.val(n.inputs[1]), e.val(n.inputs[2]))
      local C, L = e.val(q.out), e.val(n.out)
      if not (C.S == C.V and (C.S == F or C.S == "f32") and L.S == C.S and L.V == C.V) then return nil end
    end
    return r.tail
  end
  return describe, tail_of
end

-- The lines that write the 16-bit compute copy of the parameters the GEMMs read
-- (m->d_compute) from m->d_params, after init, resume or loading weights (model_upload;
-- the exported library's open), or a comment when no GEMM reads one
local function compute_copy_code(e)
  local compute_upload = "    // no compute copy: no GEMM reads a float32 parameter in 16 bits"
  local cf = e.compute.fmt
  if cf then
    local ck = e.kernel { kind = "compute_copy_" .. FMT[cf].code, ops = {}, params = "const float *__restrict__ p, so_u16 *__restrict__ copy, long long n",
      body = "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)\n" ..
             string.format("        copy[i] = so_narrow_%s(so_round_%s(p[i]));", cf, cf) }
    compute_upload = table.concat({
      string.format("    {   // the %s compute copy of the parameters the GEMMs read (the optimizer keeps it after this)", cf),
      "        void *p = m->d_params, *copy = m->d_compute;",
      "        long long n = NUM_PARAMS;",
      "        void *args[] = { &p, &copy, &n };",
      string.format("        lc_launch(&m->kernels[%d], lc_blocks(n, 256), 256, m->stream, args);", ck),
      "    }" }, "\n")
  end
  return compute_upload
end

-- The CUDA program's files for the lowered table `l` (gen/pipeline.lua).  Its
-- precision_plan.tsv is the precision plan with the C kernels' operand conversions
-- (gen/kernels_c.lua), the same table the CPU program carries.  Returns { files = { [filename] = text }, counted = what the
-- report shows: kernels, scratch, fuse_saved, compute_format, device, tf32,
-- matmul_precision, opt_states, metrics_count }.
function emit.program(l)
  local g, sp = l.graph, l.spec
  local prec = l.precision
  local opts = l.options
  local device = device_ordinal(sp, opts.devices)
  local pp, p, st, ad = l.pp, l.plan, l.state, l.autodiff
  local trace = l.trace
  local kernels = { list = {}, by_name = {} }
  local scratch = { max = 256 }

  local e = context(l, kernels, scratch)
  -- the fuse stage's groups (gen/fuse.lua): pointwise chains as one kernel each way, a
  -- producer's elementwise tail in the store of its kernel (or linear's ReLU in the GEMM)
  local fuse = require "fuse"
  local fz = l.fuse
  e.fz = fz
  local fwd = forward_code(l, e)
  local loss = trace.outputs[1]
  local lossv = e.val(loss)
  assert(lossv.S == "f32", "the loss is stored in float")
  local scaling = require("precision").SETTINGS[prec].loss_scaling
  -- DDP over NCCL (gen/strategy.lua): the gradient buckets, in the arena's format;
  -- fsdp (SHARD_GRAD_OP and FULL_SHARD) the same ranks, its gradients reduce-scattered
  -- and its parameters all-gathered instead
  local ddp = l.strategy and l.strategy.kind == "ddp"
  local fsdp = l.strategy and l.strategy.kind == "fsdp"
  local ranks = ddp or fsdp
  local buckets = ddp and require("strategy").buckets(l, (require("strategy").grad_type(l.settings))) or nil
  local bwd = backward_code(l, e, loss, scaling, buckets)

  local loop = require("emit_train").values(l)
  e.begin(nil)
  local sharded = fsdp and l.strategy.sharding
  local opt_consts, opt_ops, opt_states, consts_type, consts_count, shard_runs
  local user = ad.segments and user_step_code(l, e, kernels, scratch, scaling)
  if user then
    -- a training_step: its optimizers' updates are step_update_J (optimizer_ops is unused)
    opt_consts, opt_states, consts_type, consts_count = user.consts, user.states, user.ctype, user.count
    opt_ops = "    (void)o; (void)m;   // (a training_step's optimizers step in its own order: step_update_J)"
  else
    opt_consts, opt_ops, opt_states, consts_type, consts_count, shard_runs = optimizer(sp, kernels, e, scratch, scaling, loop.opt_groups, st.nparams, sharded)
  end
  e.begin(nil)
  -- (a training_step's loss has no accuracy: gen/pipeline.lua's assign)
  local metrics_body = user and "    (void)m; (void)B; (void)correct; (void)count;" or metrics(e, loss.node, kernels)
  -- 16-mixed's GradScaler on the device: unscale_ (grads *= 1/scale, found_inf), and
  -- update() after the optimizer (which skips its update on found_inf)
  -- FSDP FULL_SHARD under accumulation: the kernel that adds a micro-batch's reduce-scattered
  -- part into the gradient shard (model.cu's fsdp_accumulate)
  local accumulating = sharded == "FULL_SHARD" and (sp.train.accumulate or 1) > 1
  local ak = accumulating and e.kernel { kind = "fsdp_accumulate", ops = {}, params = "state_t *__restrict__ dst, const state_t *__restrict__ src, long long n",
    body = "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)\n" ..
           "        dst[i] = state_narrow(state_widen(dst[i]) + state_widen(src[i]));" }
  local unscale = unscale_kernel(e)
  local S = require("emit_train").SCALER
  local scaler_update = e.kernel { kind = "scaler_update", ops = {}, params = "float *scale, const int *found, long long *growth_tracker",
    body = table.concat({
      string.format("// GradScaler.update (_amp_update_scale_): x%g on inf/nan, x%g after %d good steps in a row",
        S.backoff_factor, S.growth_factor, S.growth_interval),
      "    if (threadIdx.x != 0 || blockIdx.x != 0) return;",
      "    if (*found) {",
      string.format("        *scale *= %s;", literal(S.backoff_factor)),
      "        *growth_tracker = 0;",
      string.format("    } else if (++*growth_tracker == %d) {", S.growth_interval),
      string.format("        float grown = *scale * %s;", literal(S.growth_factor)),
      "        if (fabsf(grown) <= 3.402823466e38f) *scale = grown;   // never grows to inf",
      "        *growth_tracker = 0;",
      "    }" }, "\n") }

  local compute_upload = compute_copy_code(e)
  local cf = e.compute.fmt

  local loop = require("emit_train").values(l)
  local um = user_metrics_code(l, e, loop.log_every)
  local state_fmt, opt_fmt = pp.settings.state, require("precision").optimizer_format(pp.settings)
  local pre = prelude(state_fmt, opt_fmt)
  local sample = sample_code(l, e)
  local srcs = kernel_sources(kernels)

  local b = batch_code(l)
  local os_ = optimizer_state_code(opt_states, sharded)
  if shard_runs then   -- FSDP FULL_SHARD's parameter groups: the runs of this rank's shard
    os_.fields[#os_.fields + 1] = "    void *d_run_end, *d_run_group;   // FSDP FULL_SHARD: the groups' runs of this rank's shard (runtime/ddp_nccl.c)"
    os_.alloc[#os_.alloc + 1] = table.concat(shard_runs, "\n")
    os_.free[#os_.free + 1] = "    cudaFree(o->d_run_end); cudaFree(o->d_run_group);"
  end

  -- 16-mixed with a training_step: each optimizer's count of updates and the skipped ones
  -- on the host (with the Optimizer, saved in checkpoints as the C program's), each step
  -- call's found_inf on the device (read back with the scaler)
  local user_scaler = user and scaling
  if user_scaler then
    local us = require("user_step").scaler_state(l, require("emit_train").SCALER, "opt_steps")
    for _, x in ipairs(us.count_fields) do os_.fields[#os_.fields + 1] = x end
    for _, x in ipairs(us.count_alloc) do os_.alloc[#os_.alloc + 1] = x end
  end

  local accel = opts.accelerator or "cuda"
  local loss_node = loss.node
  local x = loss_node.inputs[1]
  local values = {
    model_name = g.model_rec.class, spec_file = sp.file, precision = prec, precision_summary = require("precision").summary(pp),
    spec_hash = l.spec_hash, batch_max = l.batch_max,
    num_params = st.nparams, num_buffers = st.nbuffers, num_counters = #st.counters, num_ints = p.nint,
    act_bytes = p.nacts, dact_bytes = p.ngrads, scratch_bytes = scratch.max,
    num_param_tensors = #st.params, num_buffer_tensors = #st.buffers, num_counter_tensors = #st.counters,
    batch_fields = table.concat(b.fields, "\n"),
    num_batch_fields = #l.fields, loss_desc = loss_node.op, has_accuracy = l.accuracy and 1 or 0,
    state_format = state_fmt, opt_format = opt_fmt, state_ctype = FMT[state_fmt].host, opt_ctype = FMT[opt_fmt].host,
    num_kernels = #kernels.list, compute_copy = cf and 1 or 0, compute_format = cf or "none", accelerator = accel,
    optimizer_fields = table.concat(os_.fields, "\n"),
    loss_scaling = require("precision").SETTINGS[prec].loss_scaling and 1 or 0,
    user_metrics_fields = um.fields, user_metrics_decl = um.decl, sample_h = sample.sample_h,
    scaler_state_extra = user_scaler and string.format(" int32_t found_at[%d];", user.ncalls) or "",
    user_step_decl = user_scaler and table.concat({ "",
      "// 16-mixed with a training_step: after model_loss_wait, the GradScaler into o->scaler and",
      "// each optimizer step call's found_inf into o->opt_steps (taken) or o->skipped",
      "void model_user_scaler_read(Model *m, Optimizer *o);" }, "\n") or "",
  }
  -- --cuda-graph's graphs per batch slot: a kind of step each (model_train_step's key)
  values.graph_kinds = accumulating and 4 or 2
  values.graph_kinds_desc = accumulating and "the last micro-batch of a step | (its reduce-scatters add into the shard) << 1"
    or "the last micro-batch of a step"
  local tf32, matmul_precision = tf32_of(sp)
  local metrics_count = count_at(x.shape, l.batch_max)
  local files = {}
  files["precision_plan.tsv"] = require("kernels_c").precision_plan(l)
  local saved = emit.fuse_savings(fz, e, l.batch_max)
  files["fuse_plan.tsv"] = fuse.tsv(fz, saved)
  files["model.h"] = template.fill("templates/cuda/model.h.in", values)
  local mc = pick(values, { "model_name", "spec_file", "state_format" })
  mc.tf32, mc.matmul_precision, mc.metrics_count = tf32, matmul_precision, metrics_count
  mc.param_info = tensor_info_rows(st.params)
  mc.buffer_info = tensor_info_rows(st.buffers)
  mc.counter_info = tensor_info_rows(st.counters)
  mc.batch_info = table.concat(b.info, "\n")
  mc.batch_switch = table.concat(b.switch, "\n")
  mc.batch_alloc = table.concat(b.alloc, "\n")
  mc.batch_free = table.concat(b.free, "\n")
  mc.batch_copy = table.concat(b.copy, "\n")
  mc.init_body = init_lines(st, l.graph.inits)
  mc.forward_body = table.concat(fwd, "\n")
  mc.loss_ptr = lossv.ptr
  mc.backward_body = user and "    (void)m;   // (a training_step's backwards are its step_backward_K)" or
    (BACKWARD_PROLOGUE .. "\n    " .. DACT_ZERO .. "\n" .. table.concat(bwd, "\n"))
  mc.metrics_body = metrics_body
  mc.user_metrics_alloc, mc.user_metrics_free, mc.user_metrics_ops = um.alloc, um.free, um.ops
  mc.user_metrics_step, mc.user_metrics_fetch, mc.user_metrics_body = um.step, um.fetch, um.body
  mc.kernel_prelude = quote(pre)
  mc.kernel_sources = table.concat(srcs, "\n")
  mc.optimizer_consts = opt_consts
  mc.optimizer_ops = opt_ops
  mc.consts_type = consts_type
  mc.consts_count = consts_count
  mc.scaler_update_kernel = scaler_update
  mc.compute_upload = compute_upload
  mc.sample_body = sample.sample_body
  mc.unscale_kernel = unscale
  -- (FSDP SHARD_GRAD_OP: over this rank's part of the averaged gradients; found_inf then
  -- every rank's, so that all skip the same steps)
  mc.unscale_grads = sharded == "FULL_SHARD" and "fsdp_nccl_grad_shard()" or sharded and "m->d_grads + fsdp_lo()" or "m->d_grads"
  mc.unscale_count = sharded == "FULL_SHARD" and "(long long)fsdp_nccl_shard_len()" or sharded and "(long long)(fsdp_hi() - fsdp_lo())" or "NUM_PARAMS"
  mc.unscale_over_ranks = sharded and "\n    ddp_nccl_any(found, m->stream);   // FSDP: an inf or NaN in any rank's part" or ""
  -- an optimizer without state (SGD without momentum) leaves `o` unused
  mc.optimizer_alloc = #os_.alloc > 0 and table.concat(os_.alloc, "\n") or "    (void)o;   // no optimizer state"
  mc.optimizer_to_host = table.concat(os_.to_host, "\n")
  mc.optimizer_to_device = table.concat(os_.to_device, "\n")
  mc.optimizer_free = table.concat(os_.free, "\n")
  mc.ddp_include = ranks and '\nextern "C" {\n#include "ddp_nccl.h"   // DDP/FSDP: the gradients\' collectives over NCCL\n}' or ""
  -- FSDP FULL_SHARD under accumulation: the kernel that adds a micro-batch's reduce-scattered
  -- part into the gradient shard (runtime/ddp_nccl.h's fsdp_nccl_set_add)
  if accumulating then
    mc.ddp_include = mc.ddp_include .. string.format([==[

// FSDP FULL_SHARD under accumulation: dst += src (n gradients) on the model's stream,
// runtime/ddp_nccl.c's add for the micro-batches after a step's first
static void fsdp_accumulate(void *ctx, void *dst, const void *src, size_t n) {
    Model *m = (Model *)ctx;
    long long count = (long long)n;
    void *args[] = { &dst, &src, &count };
    lc_launch(&m->kernels[%d], lc_blocks(count, 256), 256, m->stream, args);
}]==], ak)
  end
  -- DDP/FSDP: the host's choices for the step (which collectives it queues), made before it
  -- is queued or its graph launched; --cuda-graph keys a graph by them (the kind of step:
  -- the last micro-batch of a step, and under FULL_SHARD's accumulation whether its
  -- reduce-scatters add into the shard) and counts a replay's collectives
  mc.ddp_step_begin = ranks and string.format("\n    ddp_nccl_begin_backward(boundary);   // %s: the step's last micro-batch %s its gradients (Fabric's no_backward_sync)",
    fsdp and "FSDP" or "DDP", fsdp and "reduce-scatters" or "all-reduces") or ""
  if accumulating then
    mc.ddp_step_begin = "\n    fsdp_nccl_set_add(fsdp_accumulate, m);   // FSDP FULL_SHARD: every micro-batch reduce-scatters, adding after a step's first" ..
      "\n    ddp_nccl_begin_backward(boundary);   // (the next backward is a step's first after a boundary)"
  end
  mc.graph_kind = accumulating and "boundary | fsdp_nccl_adding() << 1" or "boundary"
  mc.graph_launched = ranks and "\n        ddp_nccl_graph_launched(*e);   // its collectives' bytes, for the summary" or ""
  mc.graph_kinds = values.graph_kinds
  mc.ddp_finish = ddp and "\n        ddp_nccl_finish_grads();   // DDP: the compute stream waits for the NCCL stream: the gradients are the mean over ranks"
    or fsdp and "\n        fsdp_nccl_finish_grads();   // FSDP: reduce-scattered; this rank's part of the gradients is the mean over ranks"
    or ""
  mc.zero_grad = sharded == "FULL_SHARD" and
    "    (void)m;   // FSDP FULL_SHARD: each reduce-scatter writes the gradient shard; each unit's buffer was zeroed after it"
    or "    LC_CHECK(cudaMemsetAsync(m->d_grads, 0, sizeof(state_t) * NUM_PARAMS, STREAM(m->stream)));"
  mc.ddp_after_step = sharded == "SHARD_GRAD_OP" and "\n        fsdp_nccl_gather_params();   // FSDP: every rank's updated part on every rank (and the next forward waits for it)" or ""
  mc.user_step_ops = user and user.ops or ""
  if user then   -- (its own step_body: no accumulation, ddp or train.log there)
    mc.user_metrics_step, mc.ddp_finish, mc.ddp_after_step = nil, nil, nil
  end
  files["model.cu"] = template.fill("templates/cuda/model.cu.in", mc, false, { step_body = user and user.body or STEP_BODY })
  -- the C loop's pieces this loop takes (it has its own step, scaler and summary)
  local t = pick(loop.train, { "model_name", "spec_file", "settings", "default_out", "data_desc", "open_data",
    "bind_batch", "optimizer_save", "optimizer_groups", "optimizer_load", "drop_last", "callback_init",
    "callback_dirs", "test_desc", "test_weights", "logger_open", "log_step", "log_epoch", "callbacks",
    "log_test", "logger_close", "logger_globals", "checkpoint_logs", "state_dtype", "state_desc", "train_summary",
    "die_body", "eval_reduce", "eval_stop", "shard", "global_batch", "eval_metrics_init", "eval_metrics_batch", "data_globals",
    "train_augment", "epoch_train_loss" })
  t.accelerator = accel
  -- train.log's metrics: the device's accumulators, read back where a row logs them (the
  -- step's row, inside its `if`; the epoch's row; an evaluation's end)
  t.user_metrics_queue, t.user_metrics_summary = um.queue, um.summary
  if um.queue ~= "" then
    local n
    t.log_step, n = t.log_step:gsub("(\n( *)double t = now_seconds%(%);)",
      "%1\n%2model_user_metrics_read(&m, UM_STEP, um_step.value, &um_step.weight);   // this step's (train.log)", 1)
    assert(n == 1, "the step row's read-back")
    t.log_epoch = "        model_user_metrics_read(&m, UM_EPOCH, um_epoch.value, &um_epoch.weight);   // the epoch's (train.log)\n" ..
      "        model_user_metrics_clear(&m, UM_EPOCH);\n" .. t.log_epoch
    t.eval_metrics_init, t.eval_metrics_batch, t.eval_reduce = um.eval_init, um.eval_batch, um.eval_reduce
    if ranks then
      -- DDP/FSDP: each rank's accumulators read back before emit_train's metric_acc_over_ranks
      -- combines them (the step's in the ranks' slot, ddp_blocks; the epoch's with the epoch's
      -- loss; the evaluation's before the validation's sums over the ranks), not in the rows
      t.log_step, n = t.log_step:gsub("\n *model_user_metrics_read%(&m, UM_STEP[^\n]*", "", 1)
      assert(n == 1, "the step row's read-back")
      t.log_epoch, n = t.log_epoch:gsub(" *model_user_metrics_read%(&m, UM_EPOCH[^\n]*\n", "", 1)
      assert(n == 1, "the epoch row's read-back")
      t.epoch_train_loss = "epoch_train_loss_over_ranks(&m, epoch_loss_sum, epoch_loss_count)"
      t.logger_globals = t.logger_globals .. [==[

// DDP/FSDP on the devices: the epoch's train.log accumulators read back, then the epoch's
// loss and those values over every rank (every rank calls it)
static double epoch_train_loss_over_ranks(Model *m, double sum, int64_t count) {
    model_user_metrics_read(m, UM_EPOCH, um_epoch.value, &um_epoch.weight);
    return count ? epoch_over_ranks(sum / count) : NAN;
}]==]
      t.eval_reduce = um.eval_reduce .. loop.train.eval_reduce
    end
  end
  -- clipping by norm: the norm before clipping, copied back with the step (train/grad_norm)
  t.grad_norm_read = (sp.train.clip and sp.train.clip.max_norm) and
    "\n            double grad_norm = model_grad_norm(&m);   // the norm before clipping (a skipped step: NAN)" or ""
  for _, k in ipairs { "lr_body", "momentum_body", "momentum", "scheduler_desc", "momentum_desc" } do t[k] = loop.optim_c[k] end
  t.cpu_program = opts.cpu_program or "train_cpu"
  local S = require("emit_train").SCALER
  t.scaler_desc = string.format("GradScaler(init_scale=%.1f, growth_factor=%.1f, backoff_factor=%.1f, growth_interval=%d)",
    S.init_scale, S.growth_factor, S.backoff_factor, S.growth_interval)
  t.scaler_init_scale = literal(S.init_scale)
  t.device = device
  t.sample_fn = sample_fn(l)
  local blocks = TRAIN_BLOCKS
  if ranks then blocks = ddp_blocks(l, loop, t, buckets, state_fmt, opt_states, cf) end
  if user_scaler then
    -- a training_step under 16-mixed: opt.steps counts the training steps (its schedule's
    -- and the constants' `step`), each optimizer its own updates (model_user_scaler_read)
    local copy = {}
    for k, v in pairs(blocks) do copy[k] = v end
    local n1, n2
    copy.micro_batch, n1 = copy.micro_batch:gsub("\n( *)if %(LOSS_SCALING && model_scaler_read%(&m, &opt%.scaler%)%) skipped%+%+;\n *else opt%.steps%+%+;",
      "\n%1model_user_scaler_read(&m, &opt);   // the GradScaler, and each optimizer's updates taken or skipped (opt.skipped)\n" ..
      "%1opt.steps++;   // the training steps")
    copy.resume_steps, n2 = copy.resume_steps:gsub("if %(!LOSS_SCALING%) opt%.steps = rs%.step;[^\n]*",
      "opt.steps = rs.step;   // the training steps (a training_step's optimizers count their own updates: opt.opt_steps)")
    assert(n1 == 1 and n2 == 1, "the user step's scaler read")
    blocks = copy
  end
  local sched = sp.train.scheduler
  if sched and sched.kind == "ReduceLROnPlateau" then
    -- its lr is run state (rs.cb[0], stepped by the callbacks after each validation and
    -- saved in checkpoints), sent with each step's constants as lr_at's would be
    local mb, n = blocks.micro_batch:gsub("lr = lr_at%(opt%.steps, rs%.epoch, total_steps%);",
      "lr = rs.cb[0];   // ReduceLROnPlateau's current lr (run state: gen/emit_train.lua's callbacks_code)")
    assert(n == 1, "the step's lr")
    local copy = {}
    for k, v in pairs(blocks) do copy[k] = v end
    copy.micro_batch = mb
    blocks = copy
  end
  files["train.c"] = template.fill("templates/loop/train.c.in", t, false, blocks)
  -- the kernels, one file each, and the prelude they include, for inspection (the
  -- program carries its own copies)
  for _, k in ipairs(kernels.list) do files["kernels/" .. k.name .. ".cu"] = k.src end
  files["kernels/" .. PRELUDE_NAME] = pre
  for name, text in pairs(loop.files) do files[name] = text end   -- the user's hooks
  emit.add_runtime(files, g, ranks)
  return { files = files,
           counted = { kernels = kernels.list, scratch = scratch.max, fuse_saved = saved, compute_format = cf,
                       device = device, tf32 = tf32, matmul_precision = matmul_precision,
                       opt_states = #opt_states, metrics_count = metrics_count } }
end

-- Bytes of memory traffic a step saves per group: for each tensor kept in registers, its
-- store and its load in the forward, and (but for a producer's output, whose gradient
-- its own backward reads) its gradient's accumulation (a read and a write) and load in
-- the backward, at the largest batch.
function emit.fuse_savings(fz, e, batch_max)
  local saved = {}
  for _, grp in ipairs(fz.groups) do
    local bytes = 0
    for t in pairs(grp.register) do
      local n = count_at(t.shape, batch_max)
      bytes = bytes + 2 * n * FMT[e.val(t).S].bytes
      -- a producer's output gradient still goes to memory: the producer's backward reads it
      local d = not (grp.head and fz.resolve(grp.head.out) == t) and e.grad(t)
      if d then bytes = bytes + 3 * n * FMT[d.S].bytes end
    end
    -- an epilogue that writes the pre-activation too spares the activation kernel's load of it
    local h = grp.head and fz.resolve(grp.head.out)
    if grp.epilogue and grp.stored[h] then bytes = bytes + count_at(h.shape, batch_max) * FMT[e.val(h).S].bytes end
    saved[grp] = bytes
  end
  return saved
end

-- Where the CUDA toolkit is: $CUDA_HOME, else /usr/local/cuda (nil when nvcc is absent).
function emit.cuda_home()
  for _, d in ipairs { os.getenv("CUDA_HOME") or "", "/usr/local/cuda" } do
    if d ~= "" then
      local f = io.open(d .. "/bin/nvcc", "rb")
      if f then f:close(); return d end
    end
  end
  return nil
end

-- Can this backend build the spec here?  true, or false and why (for "auto").
function emit.available(g, precision, devices, detect_anomaly)
  local prec = precision or g.spec.fabric.precision
  if detect_anomaly or g.spec.fabric.detect_anomaly then return false, "the CUDA backend has no detect_anomaly yet" end
  if not emit.PRECISIONS[prec] then return false, string.format("the CUDA backend does not run precision '%s' yet", prec) end
  if not emit.cuda_home() then return false, "no CUDA toolkit (nvcc) in $CUDA_HOME or /usr/local/cuda" end
  if not g.loss then return false, "no training step" end
  local device, why = device_ordinal(g.spec, devices)
  if not device then return false, why end
  for _, node in ipairs(g.loss.nodes) do
    if not ops_cuda[node.op] or node.op == "supported" or ops_cuda.supported(node) then
      return false, string.format("the CUDA backend does not run %s yet", node.op)
    end
  end
  local opt = g.spec.train.optimizer
  if (opt.kind ~= "AdamW" and opt.kind ~= "Adam" and opt.kind ~= "SGD") or opt.args.amsgrad or (opt.args.maximize and opt.kind ~= "SGD") then
    return false, string.format("the CUDA backend does not run the %s optimizer yet", opt.kind)
  end
  return true
end

-- Files the CUDA program carries besides its own: the runtime (data, checkpoints,
-- logging, NVRTC cache, loom_cuda) and the kernels' scalar header.
local RUNTIME = { "runtime/", "templates/common/" }
-- DDP's runtime (MPI, and NCCL for the gradients): only a program with several ranks
-- carries it (a one-device program needs no mpi.h and links neither)
local DDP_ONLY = { ["runtime/collectives.c"] = true, ["runtime/collectives.h"] = true,
                   ["runtime/ddp.c"] = true, ["runtime/ddp.h"] = true,
                   ["runtime/ddp_nccl.c"] = true, ["runtime/ddp_nccl.h"] = true }

-- Adds the runtime files and the build.ninja to the program's `files` (`ddp`: the
-- program's ranks, compiled with mpicc and linked with NCCL).
function emit.add_runtime(files, g, ddp)
  local loomc = require "loomc"
  -- the data source's runtime (host-side, as the C program's: image folders add libpng/libjpeg)
  local data_rt = require("emit_train").data_runtime(g.spec)
  for _, prefix in ipairs(RUNTIME) do
    for _, p in ipairs(loomc.embedded_list(prefix)) do
      if (ddp or not DDP_ONLY[p]) and not data_rt.skip[p] then files[p:match("([^/]+)$")] = template.source(p) end
    end
  end
  local objects, list = {}, {}
  for _, name in ipairs(util.sorted_keys(files)) do
    if not name:find("/") and (name:match("%.c$") or name:match("%.cu$")) then
      local obj = "obj/" .. name:gsub("%.cu?$", ".o")
      objects[#objects + 1] = string.format("build %s: %s %s", obj, name:match("%.cu$") and "nvcc" or "cc", name)
      list[#list + 1] = obj
    end
  end
  files["build.ninja"] = template.fill("templates/cuda/build.ninja.in", {
    model_name = g.model_rec.class, spec_file = g.spec.file, cuda_home = emit.cuda_home() or "/usr/local/cuda",
    archs = "-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90",
    data_ldlibs = data_rt.ldlibs .. (ddp and " -lnccl" or ""),
    cc = ddp and "mpicc\n# DDP: OpenMPI's compiler wrapper (runtime/collectives.c needs mpi.h and libmpi)" or "cc",
    objects = table.concat(objects, "\n"), object_list = table.concat(list, " "),
  })
end

-- What the exported library (gen/emit_export_cuda.lua) builds its forward from
emit.context, emit.forward_code, emit.kernel_sources, emit.quote, emit.prelude = context, forward_code, kernel_sources, quote, prelude
emit.FMT, emit.PRELUDE_NAME, emit.device_ordinal, emit.compute_copy_code = FMT, PRELUDE_NAME, device_ordinal, compute_copy_code

return emit
