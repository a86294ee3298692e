-- pipeline: the stages a spec goes through, in order, one line each.  Each stage is a
-- function from the previous stage's value to the next one (the same `target` beside
-- it: the backend and the command line's choices); `--dump=STAGE` prints what STAGE
-- made and stops.  gen/README.md is the map: every stage, its module, and what the
-- emitters read.
local ops = require "ops"

local pipeline = {}

local function is_alias(node) return ops[node.op].alias == true end

-- a new lowered table: `l`'s fields and `fields` (a stage never changes what an
-- earlier one made; it adds its own)
local function with(l, fields)
  local n = {}
  for k, v in pairs(l) do n[k] = v end
  for k, v in pairs(fields) do n[k] = v end
  return n
end

local BACKENDS = { cpu = "emit_c", cuda = "emit_cuda", export = "emit_export" }
-- the emitter of a target: an inference program on the CUDA backend (loom export
-- --accelerator=cuda) is the exported CUDA library; its stages are the CUDA backend's
local function emitter(backend, inference)
  if backend == "cuda" and inference then return require "emit_export_cuda" end
  return require(BACKENDS[backend])
end

---------------------------------------------------------------------------
-- The stages.

-- spec: the file, run in its sandbox (its print() runs here, once)
local function spec_stage(path) return require("spec").load(path) end

-- graph: the model traced on symbolic shapes (modules, parameters, the loss's trace)
local function graph_stage(sp) return require("graph").build(sp) end

-- precision (assign): the format of every tensor of the training step; the casts go
-- into the trace before autodiff (their backward is derived).  The backend says first
-- what it cannot run (one clear error, before any work).  This makes the lowered table:
--   graph      the traced graph (gen/graph.lua): spec, params, buffers, model_rec, loss
--   spec       graph.spec
--   backend    "cpu" (gen/emit_c.lua), "cuda" (gen/emit_cuda.lua) or "export" (gen/emit_export.lua);
--              "cuda" with `inference`: the exported CUDA library (gen/emit_export_cuda.lua)
--   precision  the Fabric precision string (the spec's, or --precision=)
--   settings   precision.SETTINGS[precision]: compute, state, optimizer formats, loss scaling
--   batch_max  train.batch_size: every size in the plan is for a batch this large
--   fields     g.data_fields: the fields of a batch (name, shape, dtype, high, decl)
--   accuracy   "argmax", "threshold" (ops.lua's `accuracy` of the loss) or nil
--   spec_hash  FNV-1a of the spec's text (checkpoints remember it)
--   options    the command line's: devices, no_fuse, accelerator, cpu_program, and
--              extra_cflags/extra_ldflags (the environment's LOOM_CFLAGS/LOOM_LDFLAGS),
--              debug (-O0 -g), march and export_name (loom export), detect_anomaly
--              (--detect-anomaly or fabric { detect_anomaly = true }; a training program's)
--   pp         the precision plan (gen/precision.lua): pp.trace, pp.fmt[tensor], pp.casts
--   trace      pp.trace: the loss's trace with the casts in it, which every later stage reads
--   inference true for an inference-only program (target.inference: loom export): the
--              trace is the model's forward (g.traces.forward), `fields` its inputs,
--              batch_max target.max_batch; there is no loss, accuracy or backward
local function assign(g, target)
  local sp = g.spec
  local precision = target.precision or sp.fabric.precision
  emitter(target.backend, target.inference).check(g, target)
  require("strategy").check(g, target)
  local prec = require "precision"
  local inference = target.inference == true
  local trace = inference and g.traces.forward or g.loss
  local pp = prec.assign(trace, precision, not inference and g.step and g.step.events or nil)
  local acc, loss_node
  if not inference and not g.step then   -- (a training_step's loss has no accuracy)
    loss_node = g.loss.outputs[1].node
    acc = ops[loss_node.op].accuracy
  end
  return {
    graph = g, spec = sp, backend = target.backend, precision = precision, settings = prec.SETTINGS[precision],
    batch_max = inference and target.max_batch or sp.train.batch_size,
    fields = inference and require("graph").input_fields(g) or g.data_fields, inference = inference,
    accuracy = acc and acc(loss_node) or nil, spec_hash = target.spec_hash or "",
    options = { devices = target.devices, no_fuse = target.no_fuse, gemm_attention = target.gemm_attention, accelerator = target.accelerator,
                cpu_program = target.cpu_program, extra_cflags = target.extra_cflags or "",
                extra_ldflags = target.extra_ldflags or "", debug = target.debug, march = target.march,
                export_name = target.export_name,
                -- a training program's NaN/Inf checks after every op (an inference one has none)
                detect_anomaly = not inference and (target.detect_anomaly or sp.fabric.detect_anomaly) or nil },
    pp = pp, trace = pp.trace,
  }
end

-- autodiff: the backward of the trace (gen/autodiff.lua); the graph's frozen parameters
-- (train.freeze) need no gradient.  Adds
--   autodiff   { backward = nodes in the order they run, needs_grad[tensor], grad[tensor] }
-- An inference-only program has no backward: an empty one (nothing needs a gradient).
--   autodiff.segments  (a training_step, gen/user_step.lua) the step in order: forward
--              runs, each backward's nodes, the optimizers' steps and zero_grads; the
--              rest is for the loss the step returns
local function differentiate(l)
  if l.inference then return with(l, { autodiff = { backward = {}, needs_grad = {}, grad = {} } }) end
  if l.graph.step then
    return with(l, { autodiff = require("user_step").differentiate(l.trace, l.graph.step, l.graph.frozen) })
  end
  return with(l, { autodiff = require("autodiff").differentiate(l.trace, l.graph.frozen) })
end

-- precision (fold): a cast whose conversion can ride in a neighbour's load or store
-- becomes a view.  Adds to pp (in place: the plan it completes)
--   pp.folded[cast node], pp.link[tensor] = { src }: the folded casts and what they view
local function fold(l)
  require("precision").fold(l.pp, l.autodiff, is_alias)
  return with(l, {})
end

-- strategy: how the step is spread over devices (gen/strategy.lua): one process, or
-- DDP's or FSDP's ranks over MPI.  Adds
--   strategy   { kind = "single" } or { kind = "ddp", devices, bucket_bytes, cap_mb,
--              timeout, sync_batchnorm, synced[node] (sync_batchnorm's ops: the doubles
--              their forward and backward sum over the ranks), last[param name] = the
--              backward node index after which its gradient is final, fsdp = "NO_SHARD"
--              for fsdp's unsharded kind; with a training_step no `last` but
--              averaged[step segment] = { [param name] = true }: what is averaged before
--              that optimizer's step, strategy.step_buckets(l, seg, esize) in the layout };
--              strategy.buckets(l, esize) cuts the gradient
--              arena into buckets once the plan stage has laid it out; or { kind =
--              "fsdp", sharding = "SHARD_GRAD_OP", devices, timeout, sync_batchnorm, synced };
--              or { kind = "fsdp", sharding = "FULL_SHARD", devices, timeout,
--              sync_batchnorm, synced, unit_of[param name] (its unit's key), last (as
--              ddp's), first (the backward node that first writes each gradient), policy
--              (auto_wrap_policy, in words) }
local function strategy(l)
  return with(l, { strategy = require("strategy").plan(l) })
end

-- plan: where every tensor lives (gen/plan.lua).  Adds
--   state      plan.state: params, buffers, counters (name, entry, offset, numel),
--              nparams, nbuffers (elements, aligned), by_name; FULL_SHARD's units
--              ({ first, count, params, key, slot: its gradient buffer }), unit_max,
--              grad_slots, and each parameter's unit, gathered offset (where the kernels
--              read it) and grad_at (where they write its gradient)
--   plan       plan.activations: acts[tensor], grads[tensor] ({ offset, numel, arena,
--              fmt } in bytes, or { source } for a view), saves[node][name], nacts,
--              ngrads (bytes), nint (int32 elements), batch_max; on the C backend's
--              loss backward, reuse (gradient slots shared by liveness) and first[node]
--              (the gradients node writes first: { [root] = times it writes it })
--   root(t)    the tensor whose storage t is (through views and folded casts)
--   fuse       (the C program's loss backward) fuse.chains' groups: the ops that run as
--              one kernel, forward and backward (the fuse stage's field on CUDA)
local function plan_stage(l)
  local plan = require "plan"
  -- the C backend's loss backward writes each activation gradient first (no wholesale
  -- zeroing), so its gradients share slots by liveness; a training_step's several
  -- backwards and the CUDA program zero the arena instead
  local ad = not l.inference and l.autodiff or nil
  local reuse = ad and l.backend == "cpu" and not ad.segments
  -- the C program's chains (gen/fuse.lua's chains, ops_cpu's `chain` rules) run as one
  -- kernel each, forward and backward: the gradient slots follow from them.  The CPU
  -- export's forward runs them too (its eval-mode kernel, as the training program's
  -- validation: the same bits, one pass over memory instead of three).  Not with
  -- --no-fuse, nor --detect-anomaly (it checks every op's own output)
  local fz
  if (reuse or (l.inference and l.backend == "export")) and not l.options.no_fuse and not l.options.detect_anomaly then
    local ops_cpu = require "ops_cpu"
    fz = require("fuse").chains(l.trace, l.pp, is_alias, function(head, members, q)
      local rule = ops_cpu[head.op] and ops_cpu[head.op].chain
      return rule ~= nil and rule(head, members, q, l) or false
    end)
  end
  local p = plan.activations(l.trace, ad, l.batch_max, l.pp,
    { backend = l.backend, gemm_attention = l.options.gemm_attention, reuse = reuse, fused = fz })
  local function root(t) return plan.storage_root(p, t) end
  local s = l.strategy
  return with(l, { state = plan.state(l.graph, s and s.unit_of, s and s.unit_of and { first = s.first, last = s.last }), plan = p, root = root,
                   fuse = fz })
end

-- entries: the declared methods beside forward as the program's entry points (gen/entries.lua:
-- a method returning autoregress(...) becomes a decode step, sampling one position at a
-- time with a key/value cache; one that cannot be generated is refused at its line).  Adds
--   entries    { { name, where, context, vocab, vocab_in, temperature, top_k, steps,
--                  axis[tensor], bufs[tensor], size, round[tensor] (rows rounded to 16 bits),
--                  fmt and producer (the method's precision plan), refused } }
local function entries_stage(l)
  return with(l, { entries = require("entries").build(l) })
end

-- fuse (CUDA only): elementwise chains and producers' tails as one kernel each
-- (gen/fuse.lua; the CUDA backend says what fuses).  Adds
--   fuse       fuse.plan's groups (group_of[node], groups, resolve); on the CPU the plan
--              stage's chains (its gradient slots depend on them), or nil
local function fuse_stage(l)
  if l.backend ~= "cuda" then return l end
  local describe, tail_of = require("emit_cuda").fusion_rules(l)
  return with(l, { fuse = require("fuse").plan(l.trace, l.pp, l.autodiff, is_alias, describe, tail_of,
                                              -- (a training_step's ops unfused: its
                                              -- forward runs and backwards cut the chains)
                                              { no_fuse = l.options.no_fuse or l.autodiff.segments ~= nil }) })
end

-- emit: the program's files ({ [name] = text }) and what the emitters counted for the
-- report (the C emitter's operand conversions; the CUDA emitter's kernels)
local function emit(l)
  return emitter(l.backend, l.inference).program(l)
end

---------------------------------------------------------------------------
-- What --dump=STAGE prints.

local dumps = {}
function dumps.spec(sp)
  return string.format("spec %s: model %s, inputs %d, fabric %s/%s/%s, train %s\n", sp.file, sp.model_name,
    #sp.inputs, sp.fabric.accelerator, sp.fabric.precision, sp.fabric.strategy, sp.train and "yes" or "no")
end
function dumps.graph(g) return require("graph").dump(g) end

local function node_line(l, node)
  local prec = require "precision"
  local ins = {}
  for _, x in ipairs(node.inputs) do ins[#ins + 1] = prec.label(x) end
  local f = l.pp.fmt[node.out]
  return string.format("  %s = %s(%s)%s%s", prec.label(node.out), node.op, table.concat(ins, ", "),
    f and ("  " .. f) or "", l.pp.folded and l.pp.folded[node] and "  (folded)" or "")
end
local function trace_dump(title, l)
  local out = { string.format("%s: %s, %s on %s", title, l.graph.model_rec.class, l.precision, l.backend) }
  for _, node in ipairs(l.trace.nodes) do out[#out + 1] = node_line(l, node) end
  return table.concat(out, "\n") .. "\n"
end
function dumps.assign(l) return trace_dump("precision plan (assign)", l) end
function dumps.autodiff(l)
  local out = { string.format("autodiff: %d backward ops", #l.autodiff.backward) }
  for _, node in ipairs(l.autodiff.backward) do out[#out + 1] = node_line(l, node) end
  return table.concat(out, "\n") .. "\n"
end
function dumps.fold(l) return trace_dump("precision plan (fold)", l) .. require("precision").summary(l.pp) .. "\n" end
function dumps.strategy(l)
  if l.strategy.kind == "single" then return "strategy: single (one process, one device)\n" end
  local s = l.strategy
  if s.kind == "fsdp" and s.sharding == "FULL_SHARD" then
    return string.format("strategy: fsdp FULL_SHARD, %d ranks over MPI; parameters, gradients and optimizer state in %d flat shards; " ..
      "units: %s (each all-gathered before its forward and its backward, its gradients reduce-scattered once final); timeout %s s\n",
      s.devices, s.devices, s.policy, tostring(s.timeout))
  end
  if s.kind == "fsdp" then
    return string.format("strategy: fsdp %s, %d ranks over %s; gradients and optimizer state in %d flat shards " ..
      "(reduce-scatter after backward, all-gather of the parameters after the step); BatchNorm %s; timeout %s s\n",
      s.sharding, s.devices, l.backend == "cuda" and "MPI, the gradients and parameters over NCCL" or "MPI", s.devices, s.sync_batchnorm and "synced" or "local", tostring(s.timeout))
  end
  return string.format("strategy: %s, %d ranks over %s; %s of about %s MB; BatchNorm %s; timeout %s s\n",
    s.fsdp and ("fsdp " .. s.fsdp .. " (as ddp)") or "ddp", s.devices, l.backend == "cuda" and "MPI, the gradients over NCCL" or "MPI",
    s.averaged and "the training_step's gradients averaged before each optimizer's step, in runs" or "gradient buckets",
    tostring(s.cap_mb), s.sync_batchnorm and "synced" or "local", tostring(s.timeout))
end
function dumps.plan(l)
  local st, p = l.state, l.plan
  local out = { string.format("plan: %d parameter elements, %d buffer elements, %d counters; activations %d bytes, " ..
    "their gradients %d bytes, %d int32 (B = %d)", st.nparams, st.nbuffers, #st.counters, p.nacts, p.ngrads, p.nint, l.batch_max) }
  for _, s in ipairs(st.params) do out[#out + 1] = string.format("  param %s @%d (%d)", s.name, s.offset, s.numel) end
  for _, s in ipairs(st.buffers) do out[#out + 1] = string.format("  buffer %s @%d (%d)", s.name, s.offset, s.numel) end
  local prec = require "precision"
  for _, node in ipairs(l.trace.nodes) do
    local a = p.acts[node.out]
    out[#out + 1] = a.source and string.format("  %s: a view of %s", prec.label(node.out), prec.label(a.source))
      or string.format("  %s: acts @%d, %d %s", prec.label(node.out), a.offset, a.numel, a.fmt)
  end
  return table.concat(out, "\n") .. "\n"
end
function dumps.entries(l)
  if #l.entries == 0 then return "entries: forward only (no method beside it)\n" end
  local prec = require "precision"
  local out = {}
  for _, e in ipairs(l.entries) do
    out[#out + 1] = string.format("entry %s  <- %s:%d: sampling over %d positions, vocabulary %d, temperature %g, top_k %d; "
      .. "decode arena %d reals%s", e.name, e.where.file, e.where.line, e.context, e.vocab, e.temperature, e.top_k, e.size,
      e.refused and ("; not generated: " .. e.refused) or "")
    for _, n in ipairs(e.steps) do
      out[#out + 1] = string.format("  %s = %s(...)  position dim %d, row %d @%d", prec.label(n.out), n.op, e.axis[n.out] - 1,
        e.bufs[n.out].row, e.bufs[n.out].offset)
    end
  end
  return table.concat(out, "\n") .. "\n"
end
function dumps.fuse(l)
  if not l.fuse then return "fuse: none (the program runs one kernel call per op)\n" end
  return require("fuse").tsv(l.fuse, {})
end
function dumps.emit(result)
  local out = {}
  for _, name in ipairs(require("util").sorted_keys(result.files)) do out[#out + 1] = string.format("%s\t%d bytes", name, #result.files[name]) end
  return table.concat(out, "\n") .. "\n"
end

---------------------------------------------------------------------------
-- The driver.

pipeline.STAGES = {
  { "spec",     spec_stage },      -- gen/spec.lua
  { "graph",    graph_stage },     -- gen/graph.lua, gen/nn.lua, gen/tensor.lua, gen/ops.lua
  { "assign",   assign },          -- gen/precision.lua
  { "autodiff", differentiate },   -- gen/autodiff.lua
  { "fold",     fold },            -- gen/precision.lua
  { "strategy", strategy },        -- gen/strategy.lua
  { "plan",     plan_stage },      -- gen/plan.lua
  { "entries",  entries_stage },   -- gen/entries.lua
  { "fuse",     fuse_stage },      -- gen/fuse.lua (CUDA)
  { "emit",     emit },            -- gen/emit_c.lua, gen/emit_cuda.lua, gen/emit_train.lua
}
pipeline.NAMES = {}
for i, s in ipairs(pipeline.STAGES) do pipeline.NAMES[i] = s[1] end

-- Runs the stages from `from` through `to` on `value`; nil when `dump` named one of
-- them (its dump was printed).
function pipeline.run(value, from, to, target, dump)
  local running = false
  for _, s in ipairs(pipeline.STAGES) do
    if s[1] == from then running = true end
    if running then
      value = s[2](value, target)
      if dump == s[1] then
        io.write(dumps[s[1]](value))
        return nil
      end
    end
    if s[1] == to then break end
  end
  return value
end

-- spec → graph: the front end, once per command
function pipeline.front_end(path, dump) return pipeline.run(path, "spec", "graph", nil, dump) end

-- graph → lowered table (assign .. fuse) for target.backend
function pipeline.lower(g, target, dump) return pipeline.run(g, "assign", "fuse", target, dump) end

-- graph → the program's files and what the emitter counted
function pipeline.program(g, target, dump)
  local l = pipeline.lower(g, target, dump)
  if not l then return nil end
  local result = pipeline.run(l, "emit", "emit", target, dump)
  if not result then return nil end
  return result, l
end

return pipeline
