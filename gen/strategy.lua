-- strategy: how the training step is spread over devices (the pipeline's stage between
-- fold and plan; gen/pipeline.lua).  Both backends read what it decides:
--   { kind = "single" }                       one process, one device
--   { kind = "ddp", devices = N, ... }        N ranks over MPI (runtime/collectives.h),
--                                             as PyTorch's DistributedDataParallel; on the
--                                             CUDA backend the gradients over NCCL
--                                             (runtime/ddp_nccl.h)
--                                             (also fsdp's NO_SHARD, as PyTorch's is)
--   { kind = "fsdp", sharding = "FULL_SHARD", devices = N, unit_of, last, policy, ... }
--                                             N ranks, each holding 1/N of the parameters,
--                                             gradients and optimizer state (the flat arena
--                                             cut as below); the plan stage lays the units
--                                             out (`unit_of[param name]`: its unit's key):
--                                             each all-gathered into one buffer before the
--                                             ops that read it, in forward and again in
--                                             backward, and its gradients reduce-scattered
--                                             once final (`last`, as ddp's) from a buffer
--                                             the plan stage gives it (written from
--                                             `first`[param] on: units whose spans of the
--                                             backward do not overlap share one)
--   { kind = "fsdp", sharding = "SHARD_GRAD_OP", devices = N, ... }
--                                             N ranks, each holding the whole parameters and
--                                             1/N of the gradients and optimizer state (the
--                                             flat arena cut into N shards): gradients
--                                             reduce-scattered after backward, each rank's
--                                             optimizer updates its shard, the parameters
--                                             all-gathered after the step (runtime/ddp.h)
-- Under sync_batchnorm both say which ops' batch statistics are the global batch's:
-- `synced[node]` = { forward, backward }, the doubles each sums over the ranks
-- (ops[op].synced; the C backend emits runtime/ddp.h's ddp_sum between the op's halves).
-- (fsdp's default sharding_strategy is FULL_SHARD, as FSDPStrategy's.)
-- For ddp it also says how the gradients are averaged: `buckets`, contiguous ranges of
-- the gradient arena in the order their gradients become final in backward (PyTorch
-- DDP's reverse parameter order), each at most about bucket_cap_mb; `ready_after[node]`,
-- the buckets whose last gradient the backward of `node` writes (the generated
-- model_backward starts their all-reduce right there, so it overlaps the rest of
-- backward).
-- A training_step (gen/user_step.lua) under ddp has no `last`: its gradients are averaged
-- in model_user_step, before each optimizer's step that reads them (PyTorch DDP reduces a
-- wrapped module's gradients in each backward; averaging is linear, so reducing once what
-- the backwards since the last reduction added, before the step, gives the step the same
-- gradients): `averaged[segment]`, for each `step` segment, the names of that optimizer's
-- parameters a backward changed since they were last averaged or zeroed (none: no
-- collective); strategy.step_buckets cuts them once the layout is known.
local diag = require "diag"
local ops = require "ops"

local strategy = {}

-- the number of processes `devices` asks for (nil: one)
local function count(devices)
  if type(devices) == "table" then return #devices end
  if math.type(devices) == "integer" then return devices end
  return 1   -- "auto" (Fabric's CPU default: one), -1
end

-- Where a fabric setting is written (for a refusal's line).
local function where_of(sp, key)
  local f = sp.fabric
  local w = f.where and diag.key_where(f.where, key) or nil
  return w or f.where or { file = sp.file, line = 1 }
end

-- What the spec and the command line ask for: kind, devices (nil when single).
function strategy.requested(sp, target)
  local f = sp.fabric
  local devices = count(target and target.devices or f.devices)
  local kind = f.strategy
  if devices <= 1 and (f.num_nodes or 1) <= 1 then return "single", 1 end
  if kind == "auto" then kind = "ddp" end   -- Fabric: several devices mean DDP
  return kind, devices * (f.num_nodes or 1)
end

-- The refusals, before any work (the pipeline's assign stage calls this through the
-- backends' check): one line each, at the spec line that asks.
function strategy.check(g, target)
  local sp = g.spec
  local kind, n = strategy.requested(sp, target)
  if kind == "single" then return end
  local at = where_of(sp, "strategy")
  local f = sp.fabric
  local function given(key) return f.given and f.given[key] end
  -- an fsdp setting under ddp (or a ddp one under sharded fsdp) would be read and ignored
  for _, key in ipairs { "sharding_strategy", "cpu_offload", "auto_wrap_policy" } do
    if kind ~= "fsdp" and given(key) then
      diag.fatal(where_of(sp, key), string.format("%s is an fsdp setting; this spec's strategy is '%s'", key, kind))
    end
  end
  if kind == "fsdp" then
    local sh = f.sharding_strategy or "FULL_SHARD"
    if sh == "HYBRID_SHARD" then
      diag.fatal(where_of(sp, "sharding_strategy"),
        string.format("fsdp: sharding_strategy 'HYBRID_SHARD' is not implemented yet; write 'FULL_SHARD' (parameters, gradients " ..
          "and optimizer state sharded over the %d ranks), 'SHARD_GRAD_OP' or 'NO_SHARD' (ddp)", n))
    end
    if f.cpu_offload then
      diag.fatal(where_of(sp, "cpu_offload"), "fsdp: cpu_offload = true is moot on the CPU backend (the parameters are in host memory already); leave it out")
    end
    if given("auto_wrap_policy") and sh ~= "FULL_SHARD" then
      diag.fatal(where_of(sp, "auto_wrap_policy"), string.format("fsdp: auto_wrap_policy chooses FULL_SHARD's units; %s gathers no unit (the parameters stay whole); leave it out", sh))
    end
    if sh == "FULL_SHARD" and f.auto_wrap_policy then
      -- each class must be one of the model's (else the policy wraps nothing, silently)
      local classes, list = {}, {}
      for rec in pairs(g.prefix_of) do
        if not classes[rec.class] then list[#list + 1] = rec.class end
        classes[rec.class] = true
      end
      table.sort(list)
      for _, c in ipairs(f.auto_wrap_policy) do
        if not classes[c] then
          diag.fatal(where_of(sp, "auto_wrap_policy"), string.format("fsdp: auto_wrap_policy: the model has no module of class '%s'%s (its classes: %s)",
            c, require("util").did_you_mean(c, list), table.concat(list, ", ")))
        end
      end
    end
    if sh ~= "NO_SHARD" then
      if given("bucket_cap_mb") then
        diag.fatal(where_of(sp, "bucket_cap_mb"), string.format("bucket_cap_mb is a ddp setting: fsdp's %s reduce-scatters the gradients %s",
          sh, sh == "FULL_SHARD" and "one unit at a time" or "in one call after backward"))
      end
      if sp.train and sp.train.clip and sp.train.clip.norm_type == math.huge then
        diag.fatal(sp.train.where and diag.key_where(sp.train.where, "clip") or at,
          "fsdp: clipping by the inf-norm is not implemented yet (a maximum over every rank's shard); use a p-norm, clip_val, ddp, or --devices=1")
      end
    end
  end
  if g.step and kind == "fsdp" and (f.sharding_strategy or "FULL_SHARD") ~= "NO_SHARD" then
    diag.fatal(at, string.format("fsdp (%s) with a training_step is not supported yet (its optimizers step sharded parameters); "
      .. "use strategy = 'ddp' (or sharding_strategy = 'NO_SHARD'), or --devices=1", f.sharding_strategy or "FULL_SHARD"))
  end
  -- (the CUDA program's ranks run ddp and both fsdp shardings over NCCL, runtime/ddp_nccl.h,
  -- parameter groups too: gen/emit_cuda.lua's optimizer)
end

-- The gradient arena's element (bytes) and runtime/collectives.h type under `settings`
-- (gen/precision.lua): bf16-true and 16-true's gradients are 16-bit, reduced in float
function strategy.grad_type(settings)
  local t = settings.state
  if t == "f64" then return 8, "LC_F64" end
  if t == "bf16" then return 2, "LC_BF16" end
  if t == "f16" then return 2, "LC_F16" end
  return 4, "LC_F32"
end

-- a tensor's parameter's name, through casts and views of it (nil: not a parameter's)
local function param_of(x, derived)
  if x.param then return x.param end
  return derived[x]
end

-- sync_batchnorm: the ops whose statistics are summed over the ranks (ops[op].synced),
-- each with the doubles its forward and backward sum; nil when BatchNorm stays local
local function synced(l)
  if not l.spec.fabric.sync_batchnorm then return nil end
  local out = {}
  for _, node in ipairs(l.trace.nodes) do
    local sy = ops[node.op].synced
    if sy then out[node] = sy(node) end
  end
  return out
end

-- The backward node index after which each parameter's gradient is final (`last`), and
-- the first that writes it (`first`: a consumer of a view or cast of it counts, so that
-- no write comes before it).
local function last_grads(l)
  -- which parameter each cast or view of a parameter is
  local derived = {}
  for _, node in ipairs(l.trace.nodes) do
    local o = ops[node.op]
    if (node.op == "cast" or o.alias) and #node.inputs >= 1 then
      local p = param_of(node.inputs[1], derived)
      if p then derived[node.out] = p end
    end
  end
  -- the backward node after which each parameter's gradient is final
  local last, first = {}, {}
  local gi = l.autodiff.grad_inputs
  for k, node in ipairs(l.autodiff.backward) do
    for i, x in ipairs(node.inputs) do
      local p = gi[node] and gi[node][i] and param_of(x, derived)
      if p then last[p] = k; first[p] = first[p] or k end
    end
  end
  return last, first
end

-- A training_step's averages (see the top): for each optimizer step segment, the set of
-- its (unfrozen) parameters whose gradients a backward changed since the last average of
-- them or their zero_grad.  The loop zeroes every gradient after the training step, so
-- each step starts clean.
local function step_averaged(segments, frozen)
  local changed, out = {}, {}
  for _, s in ipairs(segments) do
    if s.kind == "backward" then
      for name in pairs(s.params) do changed[name] = true end
    elseif s.kind == "zero_grad" then
      for _, name in ipairs(s.opt.params) do changed[name] = nil end
    elseif s.kind == "step" then
      local set = {}
      for _, name in ipairs(s.opt.params) do
        if changed[name] and not frozen[name] then set[name] = true end
        changed[name] = nil
      end
      out[s] = set
    end
  end
  return out
end

-- FULL_SHARD's unit of each parameter (a key: the wrapped module's name, "" for the
-- root's): with no auto_wrap_policy, its top-level child module; with ModuleWrapPolicy's
-- classes, the innermost module of one of them that holds it.
local function units_of(g, policy)
  local class_at = {}
  for rec, prefix in pairs(g.prefix_of) do class_at[prefix:sub(1, -2)] = rec.class end
  local wrap = {}
  for _, c in ipairs(policy or {}) do wrap[c] = true end
  local unit_of = {}
  for _, p in ipairs(g.params) do
    local parts = {}
    for x in p.name:gmatch("[^.]+") do parts[#parts + 1] = x end
    local key = ""
    if not policy then
      if #parts > 1 then key = parts[1] end
    else
      for k = #parts - 1, 1, -1 do
        local prefix = table.concat(parts, ".", 1, k)
        if wrap[class_at[prefix]] then key = prefix; break end
      end
    end
    unit_of[p.name] = key
  end
  return unit_of
end

function strategy.plan(l, target)
  local kind, n = strategy.requested(l.spec, target or l.options)
  if kind == "single" then return { kind = "single", devices = 1 } end   -- (sync_batchnorm: plain BatchNorm)
  local f = l.spec.fabric
  local sh = f.sharding_strategy or "FULL_SHARD"
  if kind == "fsdp" and sh == "SHARD_GRAD_OP" then
    return { kind = "fsdp", sharding = "SHARD_GRAD_OP", devices = n, timeout = f.ddp_timeout or 300,
             sync_batchnorm = f.sync_batchnorm or false, synced = synced(l) }
  end
  if kind == "fsdp" and sh == "FULL_SHARD" then
    local last, first = last_grads(l)
    return { kind = "fsdp", sharding = "FULL_SHARD", devices = n, timeout = f.ddp_timeout or 300,
             sync_batchnorm = f.sync_batchnorm or false, synced = synced(l), unit_of = units_of(l.graph, f.auto_wrap_policy), last = last, first = first,
             policy = f.auto_wrap_policy and ("ModuleWrapPolicy { " .. table.concat(f.auto_wrap_policy, ", ") .. " }")
               or "one unit per top-level child module" }
  end
  -- ddp, and fsdp's NO_SHARD (PyTorch's FSDP without sharding is DDP)
  local cap = math.floor((f.bucket_cap_mb or 25) * 1024 * 1024)
  if l.autodiff.segments then   -- a training_step: averaged before each optimizer's step
    return { kind = "ddp", devices = n, bucket_bytes = cap, cap_mb = f.bucket_cap_mb or 25,
             timeout = f.ddp_timeout or 300, sync_batchnorm = f.sync_batchnorm or false, synced = synced(l),
             averaged = step_averaged(l.autodiff.segments, l.graph.frozen or {}), fsdp = kind == "fsdp" and f.sharding_strategy or nil }
  end
  local last = last_grads(l)
  return { kind = "ddp", devices = n, bucket_bytes = cap, cap_mb = f.bucket_cap_mb or 25,
           timeout = f.ddp_timeout or 300, sync_batchnorm = f.sync_batchnorm or false, synced = synced(l),
           last = last, fsdp = kind == "fsdp" and f.sharding_strategy or nil }
end

-- The buckets, once the plan stage has laid the parameters out (state.params: name,
-- offset, numel in elements): in reverse parameter order, cut at bucket_bytes.  Each
-- { first, last (elements, the range of the gradient arena), params, ready (the
-- backward node index after which all its gradients are final), bytes }.
function strategy.buckets(l, esize)
  local s = l.strategy
  local params = l.state.params
  local out, cur = {}, nil
  for i = #params, 1, -1 do
    local e = params[i]
    local bytes = e.numel * esize
    if not cur or (cur.bytes > 0 and cur.bytes + bytes > s.bucket_bytes) then
      cur = { first = e.offset, last = e.offset + e.numel, params = {}, ready = 0, bytes = 0 }
      out[#out + 1] = cur
    end
    cur.first = e.offset
    cur.params[#cur.params + 1] = e.name
    cur.bytes = cur.bytes + bytes
    local k = s.last[e.name]
    -- a parameter we cannot place in backward is final only at its end
    cur.ready = math.max(cur.ready, k or math.huge)
  end
  return out
end

-- A training_step's averages (`averaged`, above) in the layout: for step segment `seg`, its
-- parameters as buckets of neighbours in layout order, each { first, last (elements),
-- params, bytes }, cut at bucket_bytes (empty: nothing to average before that step).
function strategy.step_buckets(l, seg, esize)
  local set = l.strategy.averaged[seg]
  local out, cur, next_index = {}, nil, nil
  for i, e in ipairs(l.state.params) do
    if set[e.name] then
      local bytes = e.numel * esize
      if not cur or next_index ~= i or (cur.bytes > 0 and cur.bytes + bytes > l.strategy.bucket_bytes) then
        cur = { first = e.offset, last = e.offset, params = {}, bytes = 0 }
        out[#out + 1] = cur
      end
      cur.last = e.offset + e.numel
      cur.params[#cur.params + 1] = e.name
      cur.bytes = cur.bytes + bytes
      next_index = i + 1
    end
  end
  return out
end

return strategy
