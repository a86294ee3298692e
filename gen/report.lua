-- report: the REPORT.md that `loom explain` writes (and its HTML rendering by
-- libcmark).  Later stages add their own sections through `sections`.
local util = require "util"
local nn = require "nn"
local graph = require "graph"
local inspect = require "inspect"
local loomc = require "loomc"

local report = {}

local function md_escape(s) return (s:gsub("([|*_`\\<>])", "\\%1")) end

local function op_label(g, node)
  if node.module then
    local prefix = (g.prefix_of[node.module] or ""):gsub("%.$", "")
    if prefix == "" then prefix = "(model)" end
    return string.format("`%s` %s", prefix, node.module.class)
  end
  return ""
end

function report.markdown(g, sections)
  local sp = g.spec
  local out = {}
  local function add(s) out[#out + 1] = s end
  add(string.format("# %s — loom report", g.model_rec.class))
  add("")
  add(string.format("Spec: `%s`.  Precision `%s`, accelerator `%s`, strategy `%s`, devices `%s`.",
    sp.file, sp.fabric.precision, sp.fabric.accelerator, sp.fabric.strategy, tostring(sp.fabric.devices)))
  add("")
  add("## Model")
  add("")
  add("As PyTorch prints the equivalent module:")
  add("")
  add("```")
  add(nn.repr(g.model))
  add("```")
  add("")
  add("## Inputs")
  add("")
  add("| name | shape (per batch) | dtype |")
  add("| --- | --- | --- |")
  for _, inp in ipairs(sp.inputs) do
    local s = { "B" }
    for _, d in ipairs(inp.decl.shape) do s[#s + 1] = d end
    add(string.format("| %s | %s | %s |", md_escape(inp.name), util.shape_str(s), inp.decl.dtype == "int64" and "int64" or "float32"))
  end
  add("")
  add("## Parameters")
  add("")
  add("| name | shape | count | init |")
  add("| --- | --- | ---: | --- |")
  for _, p in ipairs(g.params) do
    add(string.format("| `%s` | %s | %s | %s |", p.name, inspect.shape_text(p.shape), util.commas(util.numel(p.shape)), p.init.kind))
  end
  if #g.buffers > 0 then
    add("")
    add("Buffers:")
    add("")
    add("| name | shape | dtype |")
    add("| --- | --- | --- |")
    for _, b in ipairs(g.buffers) do
      add(string.format("| `%s` | %s | %s |", b.name, inspect.shape_text(b.shape), b.dtype == "int64" and "int64" or "float32"))
    end
  end
  local np, nb = inspect.totals(g)
  add("")
  add(string.format("**%s parameters** (%s in fp32), %s buffer values.", util.commas(np), util.human_bytes(4 * np), util.commas(nb)))
  add("")
  add("## Entry points")
  add("")
  add("The model's declared methods (Fabric's `mark_forward_method`), each a function of the program:")
  add("")
  for _, e in ipairs(require("entries").describe(g)) do
    add(string.format("- `%s` (%s:%d): %s", e.name, e.where.file, e.where.line, e.what))
  end
  local traces = {}
  for _, name in ipairs(g.order) do traces[#traces + 1] = { name = name, t = g.traces[name] } end
  if g.loss then traces[#traces + 1] = { name = "loss (training step)", t = g.loss } end
  for _, e in ipairs(traces) do
    local flops, act = graph.totals(e.t)
    add("")
    add(string.format("## Traced ops: `%s`", e.name))
    add("")
    add("| # | op | module | output shape | FLOPs / sample | spec line |")
    add("| ---: | --- | --- | --- | ---: | --- |")
    for i, node in ipairs(e.t.nodes) do
      add(string.format("| %d | %s | %s | %s | %s | %s:%d |", i, node.op, op_label(g, node),
        util.shape_str(node.out.shape), util.commas(node.flops), node.where.file, node.where.line))
    end
    add("")
    add(string.format("Forward: **%s FLOPs per sample** (%sFLOP); a training step costs about 3× that. " ..
      "Activation memory: **%s per sample** (every op output, fp32).",
      util.commas(flops), util.human_flops(flops), util.human_bytes(act)))
  end
  for _, s in ipairs(sections or {}) do
    add("")
    add(s)
  end
  return table.concat(out, "\n") .. "\n"
end

-- The C backend's memory plan for the training step (gen/plan.lua), at the spec's
-- batch size: what the generated program allocates, buffer by buffer.  `l` is the
-- lowered table (gen/pipeline.lua), `counted` what the C kernels counted (gen/kernels_c.lua).
function report.memory_section(l, counted)
  if not l then return nil end
  local g = l.graph
  local prec = require "precision"
  local FORMATS = prec.FORMATS
  local st, p, S = l.state, l.plan, l.settings
  local sb, cb = FORMATS[S.state].bytes, FORMATS[S.compute].bytes
  local of = prec.optimizer_format(S)
  local B = l.batch_max
  local opt = g.spec.train.optimizer
  local nstate = opt.kind == "SGD" and (opt.args.momentum ~= 0 and 1 or 0) or (opt.args.amsgrad and 3 or 2)
  local rows = {
    { string.format("parameters (%s)", S.state), st.nparams * sb },
    { string.format("gradients (%s)", S.state), st.nparams * sb },
    { string.format("optimizer state (%s: %d per parameter, %s)", opt.kind, nstate, of), nstate * st.nparams * FORMATS[of].bytes },
    { "buffers (running statistics, counters)", st.nbuffers * sb + 8 * #st.counters },
    { string.format("activations and what backward keeps (B = %d, each in its format)", B), p.nacts },
    { "activation gradients", p.ngrads },
    { "max-pool argmax (int32)", p.nint * 4 },
  }
  if S.half then rows[#rows + 1] = { "16-bit operands widened for one op at a time", counted.num_wide * cb } end
  local out = { "## Memory plan (C backend)", "",
    string.format("What the generated program allocates for a training step at batch %d (precision %s; scratch for im2col comes on top and depends on the thread count).",
      B, l.precision), "",
    "| buffer | bytes |", "| --- | ---: |" }
  local total = 0
  for _, r in ipairs(rows) do
    out[#out + 1] = string.format("| %s | %s |", r[1], util.human_bytes(r[2]))
    total = total + r[2]
  end
  out[#out + 1] = string.format("| **total** | **%s** |", util.human_bytes(total))
  return table.concat(out, "\n")
end

-- The collectives of a multi-rank strategy (gen/strategy.lua): which tensor goes through
-- which collective, when, and its bytes per step, with the communication time a step
-- would take on N ranks under the alpha-beta model of ring collectives (latency ALPHA
-- per message, bandwidth BETA per link): all-reduce 2(N-1)(ALPHA + n/(N BETA)),
-- reduce-scatter and all-gather (N-1)(ALPHA + n/(N BETA)) each, n the tensor's bytes.
-- nil for one process.  `l` is the lowering of the program it describes: the CPU's (MPI)
-- or the CUDA one's (l.backend "cuda": NCCL on the devices, MPI on the host).
local ALPHA, BETA = 5e-6, 12.5e9   -- 5 µs, 100 Gbit/s: a data-centre Ethernet/InfiniBand link
function report.collectives_section(l)
  if not l or not l.strategy or l.strategy.kind == "single" then return nil end
  local g, s, st = l.graph, l.strategy, l.state
  local esize = require("strategy").grad_type(l.settings)
  local acc = g.spec.train.accumulate or 1
  local pbytes = st.nparams * esize
  local state_bytes = (st.nparams + st.nbuffers) * esize + 8 * #st.counters
  local out = { "## Collectives", "" }
  local function add(x) out[#out + 1] = x end
  -- messages of each step: { kind, bytes } for the prediction
  local msgs, note = {}, nil   -- note: what each rank holds (fsdp), below the table
  local cuda = l.backend == "cuda"
  local over = cuda and "NCCL (runtime/ddp_nccl.c; its communicator bootstrapped over MPI, each collective queued on NCCL's own " ..
    "stream and ordered against the compute stream by events; the host's collectives below stay MPI's)" or "MPI (runtime/collectives.c)"
  -- the start-up broadcast: device to device on the CUDA program
  local bcast = cuda and "| ncclBroadcast from rank 0 | parameters, buffers, counters (and a 16-bit compute copy of the parameters, where the precision keeps one) " ..
    "| once, at start, device to device (over MPI on the host after the best checkpoint is read for the test) | %s |"
    or "| broadcast from rank 0 | parameters, buffers, counters | once, at start (and after the best checkpoint is read for the test) | %s |"
  if s.kind == "ddp" and s.averaged then
    -- a training_step (gen/user_step.lua): each optimizer's gradients averaged before its step
    add(string.format("Strategy `%s` on %d ranks over %s, with the spec's training_step: every rank holds the whole model; " ..
      "before each optimizer's step, the gradients of its parameters that the step's backwards changed since they were " ..
      "last averaged are averaged (all-reduce, then divided by the world size), in runs of neighbouring parameters of at " ..
      "most about %s MB (PyTorch DDP reduces them in each backward; the mean of a sum is the sum of the means).",
      s.fsdp and ("fsdp, sharding_strategy " .. s.fsdp) or "ddp", s.devices, over, tostring(s.cap_mb)))
    add("")
    add("| collective | tensors | when | bytes |")
    add("| --- | --- | --- | ---: |")
    add(string.format(bcast, util.human_bytes(state_bytes)))
    for _, seg in ipairs(l.autodiff.segments) do
      if seg.kind == "step" then
        for i, b in ipairs(require("strategy").step_buckets(l, seg, esize)) do
          local names = #b.params == 1 and string.format("`%s`", b.params[1])
            or string.format("%d tensors: `%s` … `%s`", #b.params, b.params[1], b.params[#b.params])
          add(string.format("| all-reduce (avg), run %d | %s | before %s:step() (line %d) | %s |", i - 1, names, seg.opt.name,
            seg.where.line, util.human_bytes(b.bytes)))
          msgs[#msgs + 1] = { "all-reduce", b.bytes }
        end
      end
    end
    add("| all-reduce (sum) | the stop request | after each training step | 8 B |")
    msgs[#msgs + 1] = { "all-reduce", 8 }
  elseif s.kind == "ddp" then
    add(string.format("Strategy `%s` on %d ranks over %s: every rank holds the whole model; " ..
      "the gradients are averaged (all-reduce, then divided by the world size) in buckets of about %s MB, in reverse " ..
      "parameter order, each started inside backward as soon as its last gradient is final%s, so it overlaps the rest of " ..
      "backward.%s", s.fsdp and ("fsdp, sharding_strategy " .. s.fsdp) or "ddp", s.devices, over, tostring(s.cap_mb),
      cuda and " (ncclAllReduce with ncclAvg, queued right after the backward kernels that write that gradient)" or "",
      acc > 1 and string.format("  With accumulate = %d only the step's last micro-batch all-reduces (Fabric's no_backward_sync).", acc) or ""))
    add("")
    add("| collective | tensors | when | bytes |")
    add("| --- | --- | --- | ---: |")
    add(string.format(bcast, util.human_bytes(state_bytes)))
    for i, b in ipairs(require("strategy").buckets(l, esize)) do
      local when = "after backward"
      if b.ready ~= math.huge then
        local node = l.autodiff.backward[b.ready]
        local label = node and op_label(g, node) or ""
        when = string.format("in backward, after %s", label ~= "" and label .. "'s backward" or "backward op " .. b.ready)
      end
      local names = #b.params == 1 and string.format("`%s`", b.params[1])
        or string.format("%d tensors: `%s` … `%s`", #b.params, b.params[#b.params], b.params[1])
      add(string.format("| all-reduce (avg), bucket %d | %s | %s | %s |", i - 1, names, when, util.human_bytes(b.bytes)))
      msgs[#msgs + 1] = { "all-reduce", b.bytes }
    end
  elseif s.sharding == "FULL_SHARD" then
    local shard = math.ceil(st.nparams / s.devices) * esize
    local largest = 0
    for _, u in ipairs(st.units) do largest = math.max(largest, u.count * esize) end
    -- the CUDA program cuts each unit into equal parts (NCCL's collectives: runtime/ddp_nccl.h)
    local cut = string.format("the flat parameter, gradient and optimizer-state arena is cut into %d shards of %s", s.devices, util.human_bytes(shard))
    if cuda then
      shard = 0
      for _, u in ipairs(st.units) do shard = shard + math.ceil(u.count / s.devices) * esize end
      cut = string.format("each unit is cut into %d equal parts (the last padded; ncclAllGather and ncclReduceScatter take equal " ..
        "parts), a rank's shard being its part of every unit (%s: its parameters', averaged gradients' and optimizer state's)", s.devices, util.human_bytes(shard))
    end
    add(string.format("Strategy `fsdp`, sharding_strategy `FULL_SHARD`, on %d ranks over %s: %s, and each rank keeps only its shard of the parameters.  The model is " ..
      "wrapped in %d unit%s (%s); before the ops that read a unit, in forward and again in backward (reshard_after_forward), " ..
      "the unit's parameters are all-gathered into one buffer of the largest unit's size (%s), and the unit's gradients are " ..
      "reduce-scattered (each rank gets the mean of its shard) as soon as its backward has made them final.  Each rank's " ..
      "optimizer updates its shard; nothing is gathered after the step.%s", s.devices, over, cut,
      #st.units, #st.units == 1 and "" or "s", s.policy, util.human_bytes(largest),
      acc > 1 and string.format("  With accumulate = %d every micro-batch gathers and reduce-scatters (its gradients add up in the rank's shard).", acc) or ""))
    add("")
    add("| collective | tensors | when | bytes |")
    add("| --- | --- | --- | ---: |")
    add(string.format(cuda and bcast:gsub("once, at start, device to device", "once, at start, device to device, before the parameters are sharded")
      or "| broadcast from rank 0 | parameters, buffers, counters | once, at start (before the parameters are sharded) | %s |", util.human_bytes(state_bytes)))
    for i, u in ipairs(st.units) do
      local names = #u.params == 1 and string.format("`%s`", u.params[1])
        or string.format("%d tensors: `%s` … `%s`", #u.params, u.params[1], u.params[#u.params])
      local what = string.format("unit %d (%s): %s", i - 1, u.key == "" and "the root's" or ("`" .. u.key .. "`"), names)
      local bytes = u.count * esize
      add(string.format("| %s | %s | before its forward, and again before its backward | %s each |", cuda and "ncclAllGather" or "all-gather", what, util.human_bytes(bytes)))
      add(string.format("| %s | %s's gradients | in backward, once they are final (every micro-batch) | %s |", cuda and "ncclReduceScatter (avg)" or "reduce-scatter (avg)",
        what:match("^[^:]*"), util.human_bytes(bytes)))
      for _ = 1, 2 * acc do msgs[#msgs + 1] = { "all-gather", bytes } end
      for _ = 1, acc do msgs[#msgs + 1] = { "reduce-scatter", bytes } end
    end
    add(string.format("| gather to rank 0%s | the parameters' and the optimizer state's shards | each checkpoint (a full state dict) | %s per tensor set |",
      cuda and " (MPI, from host copies)" or "", util.human_bytes(pbytes)))
    local opt = g.spec.train.optimizer
    local k = #require("optimizers").rule(opt.kind).states(opt.args)
    note = string.format("Per rank: parameters %s (its shard) + %s (the gathered unit; one rank: %s), gradients %s (%d buffer%s of the " ..
      "largest unit's size, where the backward writes a unit's gradients before they are reduce-scattered; one rank: %s) + %s " ..
      "(its shard, where accumulation adds up), optimizer state %s (%d buffer%s of its shard; one rank: %s).", util.human_bytes(shard), util.human_bytes(largest),
      util.human_bytes(pbytes), util.human_bytes(st.grad_slots * largest), st.grad_slots, st.grad_slots == 1 and "" or "s",
      util.human_bytes(pbytes), util.human_bytes(shard), util.human_bytes(k * shard), k, k == 1 and "" or "s",
      util.human_bytes(k * pbytes))
  elseif cuda then
    -- SHARD_GRAD_OP on the devices (runtime/ddp_nccl.h's fsdp_nccl_*): in place, no shard buffer of the gradients
    local part = math.ceil(st.nparams / s.devices) * esize
    add(string.format("Strategy `fsdp`, sharding_strategy `%s`, on %d ranks over %s: every rank holds the whole parameters and " ..
      "gradients on its device; the flat arena is cut into %d parts of %s, and each rank's optimizer state on its device is its " ..
      "part's.  After backward the gradients are reduce-scattered in place (ncclReduceScatter with ncclAvg: the rank's part of " ..
      "the arena becomes the mean over ranks), each rank's optimizer updates its part of the parameters, and the parameters " ..
      "(and their 16-bit compute copy, where the precision keeps one) are all-gathered in place (ncclAllGather) before the next " ..
      "forward.%s", s.sharding, s.devices, over, s.devices, util.human_bytes(part),
      acc > 1 and string.format("  With accumulate = %d only the step's last micro-batch reduce-scatters.", acc) or ""))
    add("")
    add("| collective | tensors | when | bytes |")
    add("| --- | --- | --- | ---: |")
    add(string.format(bcast, util.human_bytes(state_bytes)))
    add(string.format("| ncclReduceScatter (avg), in place | every gradient (%d tensors), flat | after backward | %s |", #st.params, util.human_bytes(pbytes)))
    add(string.format("| ncclAllReduce (sum) | the stop request (one element) | beside the reduce-scatter | %s |", util.human_bytes(esize)))
    add(string.format("| ncclAllGather, in place | every parameter, flat | after the optimizer step | %s |", util.human_bytes(pbytes)))
    local oesize = require("precision").optimizer_format(l.settings) ~= l.settings.state and 4 or esize
    add(string.format("| gather to rank 0 (MPI, from the host copies) | the optimizer state's parts | each checkpoint (a full state dict) | %s per state buffer |",
      util.human_bytes(st.nparams * oesize)))
    local opt = g.spec.train.optimizer
    local k = #require("optimizers").rule(opt.kind).states(opt.args)
    local opart = math.ceil(st.nparams / s.devices) * oesize
    note = string.format("Per rank on the device: parameters %s (whole), gradients %s (backward's arena; its part averaged in place), " ..
      "optimizer state %s (%d buffer%s of its part; one rank: %s).", util.human_bytes(pbytes), util.human_bytes(pbytes),
      util.human_bytes(k * opart), k, k == 1 and "" or "s", util.human_bytes(k * st.nparams * oesize))
    msgs[#msgs + 1] = { "reduce-scatter", pbytes }
    msgs[#msgs + 1] = { "all-reduce", esize }
    msgs[#msgs + 1] = { "all-gather", pbytes }
  else
    add(string.format("Strategy `fsdp`, sharding_strategy `%s`, on %d ranks over MPI: every rank holds the whole parameters; " ..
      "the flat gradient and optimizer-state arena is cut into %d shards of %s.  After backward the gradients are " ..
      "reduce-scattered (each rank gets the mean of its shard), each rank's optimizer updates its shard of the parameters, " ..
      "and the parameters are all-gathered.%s", s.sharding, s.devices, s.devices,
      util.human_bytes(math.ceil(st.nparams / s.devices) * esize),
      acc > 1 and string.format("  With accumulate = %d only the step's last micro-batch reduce-scatters.", acc) or ""))
    add("")
    add("| collective | tensors | when | bytes |")
    add("| --- | --- | --- | ---: |")
    add(string.format("| broadcast from rank 0 | parameters, buffers, counters | once, at start | %s |", util.human_bytes(state_bytes)))
    add(string.format("| reduce-scatter (avg) | every gradient (%d tensors), flat | after backward | %s |", #st.params, util.human_bytes(pbytes)))
    add(string.format("| all-gather | every parameter, flat | after the optimizer step | %s |", util.human_bytes(pbytes)))
    -- the optimizer state's element: the parameters' but at 16-true (float32 state)
    local oesize = require("precision").optimizer_format(l.settings) ~= l.settings.state and 4 or esize
    add(string.format("| gather to rank 0 | the optimizer state's shards | each checkpoint (a full state dict) | %s per state buffer |", util.human_bytes(st.nparams * oesize)))
    local opt = g.spec.train.optimizer
    local k = #require("optimizers").rule(opt.kind).states(opt.args)
    local shard = math.ceil(st.nparams / s.devices) * esize
    local oshard = math.ceil(st.nparams / s.devices) * oesize
    note = string.format("Per rank: parameters %s (whole), gradients %s (backward's arena) + %s (its shard), optimizer state %s " ..
      "(%d buffer%s of its shard; one rank: %s).", util.human_bytes(pbytes), util.human_bytes(pbytes), util.human_bytes(shard),
      util.human_bytes(k * oshard), k, k == 1 and "" or "s", util.human_bytes(k * st.nparams * oesize))
    msgs[#msgs + 1] = { "reduce-scatter", pbytes }
    msgs[#msgs + 1] = { "all-gather", pbytes }
  end
  -- sync_batchnorm: two small blocking all-reduces per BatchNorm, on every micro-batch
  for _, node in ipairs(l.trace.nodes) do
    local sy = s.synced and s.synced[node]
    if sy then
      local label = op_label(g, node)
      label = label ~= "" and label or node.op
      add(string.format("| all-reduce (sum), SyncBatchNorm | %s's per-channel sum x, sum x², count | its training forward%s | %s |",
        label, acc > 1 and ", every micro-batch" or "", util.human_bytes(8 * sy.forward)))
      add(string.format("| all-reduce (sum), SyncBatchNorm | %s's per-channel sum dout, sum dout·xhat, count | its backward%s | %s |",
        label, acc > 1 and ", every micro-batch" or "", util.human_bytes(8 * sy.backward)))
      for _ = 1, acc do
        msgs[#msgs + 1] = { "all-reduce", 8 * sy.forward }
        msgs[#msgs + 1] = { "all-reduce", 8 * sy.backward }
      end
    end
  end
  add(string.format("| all-reduce (sum)%s | the validation's loss and accuracy sums | each validation | 32 B |", cuda and " (MPI, on the host)" or ""))
  add("")
  if note then add(note); add("") end
  local step_bytes = 0
  for _, m in ipairs(msgs) do step_bytes = step_bytes + m[2] end
  add(string.format("Per optimizer step, %s go through the collectives (the tensors' size; a ring sends about twice that per rank for an all-reduce).", util.human_bytes(step_bytes)))
  add("")
  local function predict(n)
    local t = 0
    for _, m in ipairs(msgs) do
      local hops = m[1] == "all-reduce" and 2 * (n - 1) or (n - 1)
      t = t + hops * (ALPHA + m[2] / (n * BETA))
    end
    return t
  end
  add(string.format("Predicted communication per step (ring collectives, alpha = %g µs per message, beta = %g GB/s per link; " ..
    "not measured: overlap with backward hides part of it):", ALPHA * 1e6, BETA / 1e9))
  add("")
  add("| ranks | communication per step |")
  add("| ---: | ---: |")
  local ns = { s.devices }
  for _, n in ipairs { 8, 64, 512 } do if n ~= s.devices then ns[#ns + 1] = n end end
  table.sort(ns)
  for _, n in ipairs(ns) do add(string.format("| %d%s | %.3g ms |", n, n == s.devices and " (this spec)" or "", predict(n) * 1e3)) end
  return table.concat(out, "\n")
end

-- The CUDA program's fused kernels (gen/fuse.lua): each group of more than one op, what
-- stays in registers, and the memory traffic that saves a step.  `l` is the lowered
-- table for the CUDA backend (its fuse plan), `cuda` what gen/emit_cuda.lua counted; `no_fuse` says it was asked off;
-- `unavailable` why there is no CUDA program.
function report.fuse_section(l, cuda, no_fuse, unavailable)
  if not cuda and unavailable then
    return "## Fused kernels (CUDA)\n\nNo CUDA program: " .. unavailable .. "."
  end
  if not cuda then return nil end
  local g = l.graph
  local fz, saved = l.fuse, cuda.fuse_saved
  local out = { "## Fused kernels (CUDA)", "" }
  if no_fuse then
    out[#out + 1] = "Fusion is off (`--no-fuse`): every op runs its own kernels."
    return table.concat(out, "\n")
  end
  local rows, total, n = {}, 0, 0
  for _, grp in ipairs(fz.groups) do
    local list = require("fuse").nodes(grp)
    if #list > 1 then
      n = n + 1
      local ops, lines, regs, stored = {}, {}, {}, {}
      local seen = {}
      for _, m in ipairs(list) do
        ops[#ops + 1] = m.op
        local at = m.where and string.format("%s:%d", m.where.file:match("[^/]*$"), m.where.line)
        if at and not seen[at] then seen[at] = true; lines[#lines + 1] = at end
        local t = fz.resolve(m.out)
        if grp.register[t] then regs[#regs + 1] = string.format("%s %s", m.op, util.shape_str(t.shape)) end
        if grp.stored[t] then stored[#stored + 1] = string.format("%s: %s", m.op, grp.stored[t]) end
      end
      local how = grp.epilogue and string.format("cuBLASLt epilogue (GEMM + bias + %s)", grp.members[1].op) or grp.head and
        string.format("appended to %s's kernel", grp.head.op) or "one kernel forward, one backward"
      rows[#rows + 1] = string.format("| %d | %s | %s | %s | %s | %s | %s |", n, table.concat(ops, " → "), table.concat(lines, ", "),
        how, #regs > 0 and table.concat(regs, ", ") or "-", #stored > 0 and table.concat(stored, "; ") or "-",
        util.human_bytes(saved[grp] or 0))
      total = total + (saved[grp] or 0)
    end
  end
  out[#out + 1] = string.format("%d groups of elementwise ops run as single kernels, saving **%s** of memory traffic a step " ..
    "at batch %d (for each value kept in registers: its store and load forward, and but for a producer's output its " ..
    "gradient's accumulation and load backward).  Fusing changes no arithmetic: a value in a register is rounded as its buffer would round it, and the " ..
    "fused backward recomputes the chain's values from the group's inputs.  `--no-fuse` builds the unfused program to compare.",
    n, util.human_bytes(total), l.batch_max)
  if n > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "| # | ops | spec lines | how | in registers | stored (why) | saved a step |"
    out[#out + 1] = "| ---: | --- | --- | --- | --- | --- | ---: |"
    for _, r in ipairs(rows) do out[#out + 1] = r end
  end
  for _, node in ipairs(g.loss and g.loss.nodes or {}) do
    if node.op == "cross_entropy" then
      out[#out + 1] = ""
      out[#out + 1] = "Softmax and cross-entropy are one kernel already: the cross-entropy kernel computes the " ..
        "log-softmax and the loss in one pass and keeps the log-probabilities for its backward."
      break
    end
  end
  return table.concat(out, "\n")
end

-- The CUDA program (gen/emit_cuda.lua): the device, the GEMMs' precision, its device
-- memory and how it convolves.  `l` is the lowered table for the CUDA backend (nil
-- when there is none), `cuda` what emit_cuda.program counted, or { unavailable = why }.
function report.cuda_section(g, l, cuda)
  local f = g.spec.fabric
  local out = { "## CUDA backend", "" }
  local function add(s) out[#out + 1] = s end
  if cuda.unavailable then
    add("The CUDA backend does not build this spec: " .. cuda.unavailable .. ".")
    return table.concat(out, "\n")
  end
  local st, p = l.state, l.plan
  local shown = type(f.devices) == "table" and ("{" .. table.concat(f.devices, ", ") .. "}") or tostring(f.devices)
  add(string.format("- Device: GPU %d (`devices = %s`; the program's `--device N` picks another).", cuda.device, shown))
  add(string.format("- GEMMs: cuBLASLt with float accumulation; float32 GEMMs in %s (`float32_matmul_precision = \"%s\"`, " ..
    "as `torch.set_float32_matmul_precision`).", cuda.tf32 == 1 and "TF32" or "full float32", cuda.matmul_precision))
  add("- Convolution: im2col (an NVRTC kernel that also folds the operand's cast) and one cuBLASLt GEMM per pass " ..
    "(forward; weight gradient; input gradient, then col2im).  Chosen because the GEMM is the same library call, plan " ..
    "cache and precision handling (bf16/fp16 operands, float accumulation, TF32 opt-in) as every Linear, with no second " ..
    "library, workspace or per-shape algorithm search at start-up, and the layout kernels take the precision plan's " ..
    "casts for free.  The cost: the column buffer is C·K·K times the input (scratch below) and is written and read " ..
    "once per pass, where cuDNN's implicit GEMM reads the input in place; for small channel counts (the first layers) " ..
    "cuDNN is expected to be faster.  This is argued, not measured: `bench/gpu_conv.sh` times both (cuDNN's fastest " ..
    "algorithm from cudnnFind*) at fashion_cnn's and paw's shapes in fp32 and bf16 on a GPU.")
  local prec = require "precision"
  local NAME, F = prec.TORCH_DTYPE, prec.FORMATS
  local sf, of = l.settings.state, prec.optimizer_format(l.settings)
  local rows = {
    { string.format("parameters (%s%s)", NAME[sf], cuda.compute_format and " master weights" or ""), st.nparams * F[sf].bytes },
    { string.format("gradients (%s)", NAME[sf]), st.nparams * F[sf].bytes },
    { string.format("optimizer state (%d per parameter, %s)", cuda.opt_states, NAME[of]), cuda.opt_states * st.nparams * F[of].bytes },
  }
  if cuda.compute_format then
    rows[#rows + 1] = { string.format("compute copy (%s: what the GEMMs read of the weights, written by the optimizer)", cuda.compute_format),
      st.nparams * 2 }
  end
  for _, r in ipairs {
    { "buffers (running statistics, counters)", st.nbuffers * F[sf].bytes + 8 * #st.counters },
    { string.format("activations and what backward keeps (B = %d)", l.batch_max), p.nacts },
    { "activation gradients", p.ngrads },
    { "max-pool argmax (int32)", p.nint * 4 },
    { "scratch (im2col columns, operands converted for cuBLASLt, the largest one op needs)", cuda.scratch },
  } do rows[#rows + 1] = r end
  add("")
  add(string.format("Device memory of the training step at batch %d (precision %s; double-buffered batches and cuBLASLt's 32 MiB workspace come on top):",
    l.batch_max, l.precision))
  add("")
  add("| buffer | bytes |")
  add("| --- | ---: |")
  local total = 0
  for _, r in ipairs(rows) do
    add(string.format("| %s | %s |", r[1], util.human_bytes(r[2])))
    total = total + r[2]
  end
  add(string.format("| **total** | **%s** |", util.human_bytes(total)))
  return table.concat(out, "\n")
end

-- Bytes the kernels of one training step read and write, by kind of tensor, and the
-- values converted between formats on the way (from the emitter's operand lists).
local function traffic(l, counted)
  local FORMATS = require("precision").FORMATS
  local pp = l.pp
  local compute_bytes = FORMATS[pp.settings.compute].bytes
  local rows = { parameters = { 0, 0, 0 }, activations = { 0, 0, 0 }, gradients = { 0, 0, 0 },
                 ["activation gradients"] = { 0, 0, 0 }, buffers = { 0, 0, 0 } }
  for _, list in ipairs { counted.operands[1], counted.operands[2] } do
    for _, o in ipairs(list) do
      local r = l.root(o.tensor)
      local kind = o.what == "value" and (r.param and "parameters" or "activations")
        or o.what == "grad" and (r.param and "gradients" or "activation gradients") or "buffers"
      local n = o.count
      local sb = FORMATS[o.storage].bytes
      local moves = (o.how == "accum" or o.how == "update") and 2 or 1
      rows[kind][1] = rows[kind][1] + n * sb * moves
      if o.native then                                  -- the kernel reads its 16-bit storage itself
      elseif o.storage ~= o.view then                   -- a folded cast: the value changes dtype
        rows[kind][2] = rows[kind][2] + n * moves
      elseif o.storage ~= pp.settings.compute then      -- 16 bits widened to compute in
        rows[kind][3] = rows[kind][3] + n * moves
      end
    end
  end
  return rows, compute_bytes
end

-- The precision plan: every tensor's format, every cast with its rule and fate, and
-- what a step moves.  With `compare_wrapper`, what a run-time wrapper (Fabric's
-- convert_input/convert_output plus autocast, casting at every op call) would do.
function report.precision_section(l, counted, compare_wrapper)
  if not l then return nil end
  local g = l.graph
  local prec = require "precision"
  local pp = l.pp
  local S = pp.settings
  local B = l.batch_max
  local out = { "## Precision plan", "",
    string.format("Precision **%s**: kernels compute in %s; %s%s%s.",
      pp.name, prec.TORCH_DTYPE[S.compute],
      S.optimizer and string.format("parameters and gradients are %s, the optimizer state %s", prec.TORCH_DTYPE[S.state], prec.TORCH_DTYPE[S.optimizer])
        or string.format("parameters, gradients and optimizer state are %s", prec.TORCH_DTYPE[S.state]),
      S.half and (", activations follow autocast's rules in " .. prec.TORCH_DTYPE[S.half]) or "",
      S.loss_scaling and "; the loss is scaled dynamically (GradScaler)" or ""), "" }
  local function numel(t)
    local n = 1
    for _, d in ipairs(t.shape) do n = n * (d == "B" and B or d) end
    return n
  end
  -- casts
  local kept, folded = 0, 0
  if #pp.casts == 0 then
    out[#out + 1] = "No casts: every tensor is in one format."
  else
    out[#out + 1] = "| cast | of | rule | fate | spec line |"
    out[#out + 1] = "| --- | --- | --- | --- | --- |"
    for _, c in ipairs(pp.casts) do
      if pp.folded[c.node] then folded = folded + 1 else kept = kept + 1 end
      out[#out + 1] = string.format("| %s → %s | %s %s | %s | %s | %s:%d |", c.from, c.to, md_escape(prec.label(c.node.inputs[1])),
        util.shape_str(c.node.inputs[1].shape), md_escape(c.rule), md_escape(c.fate or ""), c.node.where.file, c.node.where.line)
    end
    out[#out + 1] = ""
    out[#out + 1] = string.format("%d casts: %d folded into a neighbouring kernel's load or store, %d kept as kernels.", #pp.casts, folded, kept)
  end
  -- tensors
  out[#out + 1] = ""
  out[#out + 1] = "| tensor | shape | format | stored |"
  out[#out + 1] = "| --- | --- | --- | --- |"
  local seen = {}
  for _, node in ipairs(pp.trace.nodes) do
    local list = { node.out }
    for i = 1, (require("ops")[node.op].arity or #node.inputs) do list[#list + 1] = node.inputs[i] end
    for _, t in ipairs(list) do
      if t and t.dtype == "float" and not seen[t] then
        seen[t] = true
        local r = l.root(t)
        out[#out + 1] = string.format("| %s | %s | %s | %s |", md_escape(prec.label(t)), util.shape_str(t.shape), pp.fmt[t],
          r == t and "own buffer" or ("in " .. md_escape(prec.label(r)) .. " (" .. pp.fmt[r] .. ")"))
      end
    end
  end
  -- traffic
  local rows = traffic(l, counted)
  out[#out + 1] = ""
  out[#out + 1] = string.format("Bytes the kernels read and write in one training step at batch %d (each operand once per kernel call, in its storage format); the values that change dtype on the way (folded casts); and the 16-bit values widened to float for a kernel, which involves no change of dtype (float holds every 16-bit value):", B)
  out[#out + 1] = ""
  out[#out + 1] = "| tensors | bytes moved | values cast in a load or store | 16-bit values widened |"
  out[#out + 1] = "| --- | ---: | ---: | ---: |"
  for _, k in ipairs { "parameters", "gradients", "activations", "activation gradients", "buffers" } do
    out[#out + 1] = string.format("| %s | %s | %d | %d |", k, util.human_bytes(rows[k][1]), rows[k][2], rows[k][3])
  end
  if compare_wrapper then
    local FORMATS = prec.FORMATS
    local w_kernels, w_values, w_bytes = 0, 0, 0
    local l_kernels, l_values, l_bytes = 0, 0, 0
    for _, c in ipairs(pp.casts) do
      local x, y = c.node.inputs[1], c.node.out
      local n = numel(x)
      local per = FORMATS[c.from].bytes + FORMATS[c.to].bytes
      -- autocast casts at every op call; a parameter's cast is cached for the forward
      local calls = x.param and 1 or pp.uses[y]
      local back = l.autodiff.needs_grad[y] and calls or 0
      w_kernels = w_kernels + calls + back
      w_values = w_values + n * (calls + back)
      w_bytes = w_bytes + n * per * (calls + back)
      if not pp.folded[c.node] then
        local lb = l.autodiff.needs_grad[y] and 1 or 0
        l_kernels = l_kernels + 1 + lb
        l_values = l_values + n * (1 + lb)
        l_bytes = l_bytes + n * per * (1 + lb)
      end
    end
    local folded_values = 0
    for _, k in pairs(rows) do folded_values = folded_values + k[2] end   -- (widening is not a cast)
    out[#out + 1] = ""
    out[#out + 1] = "### Against a run-time wrapper"
    out[#out + 1] = ""
    out[#out + 1] = "A wrapper that converts at run time (Fabric's convert_input / convert_output around the forward, autocast casting the inputs of every op call, with its per-forward cache of parameter casts, and autograd casting each gradient back) runs every cast below as a kernel of its own, reading and writing the whole tensor. loom keeps as kernels only the casts in the plan above; the others are conversions inside the load or store of a kernel that reads the tensor anyway."
    out[#out + 1] = ""
    out[#out + 1] = "| per training step | run-time wrapper | loom |"
    out[#out + 1] = "| --- | ---: | ---: |"
    out[#out + 1] = string.format("| cast kernels | %d | %d |", w_kernels, l_kernels)
    out[#out + 1] = string.format("| values converted by cast kernels | %d | %d |", w_values, l_values)
    out[#out + 1] = string.format("| bytes those kernels read and write | %s | %s |", util.human_bytes(w_bytes), util.human_bytes(l_bytes))
    out[#out + 1] = string.format("| values cast inside other kernels' loads and stores | 0 | %d |", folded_values)
    out[#out + 1] = ""
    out[#out + 1] = "On this CPU backend a kernel's conversions are a pass over the operand into a float buffer next to the kernel (there is no bf16 arithmetic to do them in registers); the CUDA backend does them in the kernel's loads and stores."
  end
  return table.concat(out, "\n")
end

local HTML_HEAD = [[<!doctype html>
<html><head><meta charset="utf-8"><title>%s</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 8px; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; } code { font-size: 90%%; }
</style></head><body>
]]

function report.html(title, markdown)
  return string.format(HTML_HEAD, title) .. loomc.markdown_to_html(markdown) .. "</body></html>\n"
end

return report
