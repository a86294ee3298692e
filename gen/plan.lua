-- plan: where every tensor of a trace lives.  One parameter buffer (named views
-- in state_dict order), one gradient buffer with the same layout, one buffer
-- buffer (running stats), one activation arena and one activation-gradient arena,
-- plus what ops save for their backward.  Sizes are per batch of B_MAX samples;
-- the program passes the actual batch size at run time (a last, smaller batch).
-- Views (reshape, flatten) take no storage: they alias their input.
local util = require "util"
local ops = require "ops"

local plan = {}

local ALIGN = 16     -- elements: 64-byte alignment for fp32 vectors

local function align(n) return (n + ALIGN - 1) // ALIGN * ALIGN end

-- Elements per sample and fixed elements of a shape with "B" in it.
local function sizes(shape)
  local per, batched = 1, false
  for _, d in ipairs(shape) do if d == "B" then batched = true else per = per * d end end
  return per, batched
end
plan.sizes = sizes

-- The state: parameters and float buffers in one layout each (as nn.named_tensors
-- orders them), the int64 counters (num_batches_tracked) on their own; with `unit_of`
-- (FULL_SHARD), the units (plan.units; `spans`: the strategy's first and last backward
-- node writing each parameter's gradient).
function plan.state(g, unit_of, spans)
  local st = { params = {}, buffers = {}, counters = {}, nparams = 0, nbuffers = 0 }
  for _, p in ipairs(g.params) do
    local n = util.numel(p.shape)
    st.params[#st.params + 1] = { name = p.name, entry = p, offset = st.nparams, numel = n }
    st.nparams = st.nparams + align(n)
  end
  for _, b in ipairs(g.buffers) do
    local n = util.numel(b.shape)
    if b.dtype == "int64" then
      st.counters[#st.counters + 1] = { name = b.name, entry = b, offset = #st.counters, numel = n }
    else
      st.buffers[#st.buffers + 1] = { name = b.name, entry = b, offset = st.nbuffers, numel = n }
      st.nbuffers = st.nbuffers + align(n)
    end
  end
  st.by_name = {}
  for _, list in ipairs { st.params, st.buffers, st.counters } do
    for _, e in ipairs(list) do st.by_name[e.name] = e end
  end
  if unit_of then plan.units(st, unit_of, spans, g.frozen or {}) end
  return st
end

-- FSDP's FULL_SHARD (gen/strategy.lua's `unit_of[parameter name]`, a unit's key): the
-- units as ranges of the parameter arena, each a run of consecutive parameters with one
-- key (a key met again after another's run is a unit of its own), { first, count (in
-- elements, with the alignment padding), params, key }; each parameter's `unit` and
-- `gathered` offset, where the kernels read it: in the one buffer a unit is gathered into.
-- Its gradients are written in a buffer of the largest unit's size too (`grad_at`, the
-- parameter's offset in the units' gradient buffers), reduce-scattered into the rank's
-- shard once final: units whose spans of the backward (from the first node writing one of
-- their gradients to the last) overlap get buffers of their own, as registers by interval
-- colouring; a unit no gradient reaches has none (u.slot nil).  st.unit_max: the largest
-- unit (elements); st.grad_slots: the buffers.
function plan.units(st, unit_of, spans, frozen)
  st.units = {}
  local cur
  for _, e in ipairs(st.params) do
    local key = unit_of[e.name]
    if not cur or cur.key ~= key then
      cur = { first = e.offset, count = 0, params = {}, key = key }
      st.units[#st.units + 1] = cur
    end
    cur.params[#cur.params + 1] = e.name
    cur.count = e.offset + align(e.numel) - cur.first
    e.unit, e.gathered = #st.units, e.offset - cur.first
  end
  st.unit_max = 0
  local order = {}
  for _, u in ipairs(st.units) do
    st.unit_max = math.max(st.unit_max, u.count)
    for _, name in ipairs(u.params) do
      if not frozen[name] and spans.first[name] then
        u.from = math.min(u.from or math.huge, spans.first[name])
        u.to = math.max(u.to or 0, spans.last[name] or math.huge)
      end
    end
    if u.from then order[#order + 1] = u end
  end
  table.sort(order, function(a, b) return a.from < b.from end)
  local ends = {}   -- per buffer: the backward node after which it is free again
  for _, u in ipairs(order) do
    local k = 1
    while ends[k] and ends[k] >= u.from do k = k + 1 end
    u.slot, ends[k] = k - 1, u.to
  end
  st.grad_slots = #ends
  for _, e in ipairs(st.params) do
    local u = st.units[e.unit]
    if u.slot then e.grad_at = u.slot * st.unit_max + e.gathered end
  end
end

-- The tensor whose storage t is, under the activation plan p (views and folded casts
-- have none of their own: their source's, followed to the end)
function plan.storage_root(p, t)
  while p.acts[t] and p.acts[t].source do t = p.acts[t].source end
  return t
end

-- Activation layout of one trace (with its autodiff result `ad`, or nil for an
-- inference-only entry point) under the precision plan `pp` (gen/precision.lua).
-- Offsets and sizes of the two activation arenas are in bytes: each tensor is
-- stored in its own format, and a tensor linked to another by a folded cast has
-- no storage of its own.  Saved values are in the compute type.  `target` ({ backend,
-- gemm_attention, reuse }): backend and gemm_attention are what an op's saves rule may
-- ask (gen/ops.lua: fused attention on CUDA).
--
-- With target.reuse (the C backend's loss backward: gen/pipeline.lua) the activation
-- gradients share slots whose lifetimes in the backward do not overlap, and each
-- gradient's first writer is known, so nothing is zeroed wholesale: p.first[node] lists
-- the gradients (roots) `node` writes first ({ [root] = 1 if it writes it once }), which
-- the C backend stores instead of adding to, or zeroes just before the node;
-- p.param_first[node] the same for the parameters' gradients, which the first writer
-- stores on a backward that follows model_zero_grad (the others add, and zero_grad clears them).
function plan.activations(trace, ad, batch_max, pp, target)
  local reuse = target and target.reuse
  local FORMATS = require("precision").FORMATS
  local compute = pp.settings.compute
  local p = { acts = {}, grads = {}, saves = {}, nacts = 0, ngrads = 0, nint = 0, batch_max = batch_max }
  local function root(t) return plan.storage_root(p, t) end   -- (so far: the layout is being built)
  -- a slot of `field`'s arena for a tensor of `shape` and `fmt`, with its size in bytes
  -- (64-byte aligned); its offset is the caller's to set
  local function slot(field, shape, fmt)
    local per, batched = sizes(shape)
    local n = batched and per * batch_max or per
    return { numel = n, arena = field, fmt = fmt, batched = batched }, align((n * FORMATS[fmt].bytes + 3) // 4) * 4
  end
  local function alloc(field, count_field, shape, fmt)
    local e, bytes = slot(field, shape, fmt)
    e.offset = p[count_field]
    p[count_field] = p[count_field] + bytes
    return e
  end
  for _, node in ipairs(trace.nodes) do
    local rule = ops[node.op]
    local out = node.out
    if rule.alias then
      local src = node.inputs[1]
      p.acts[out] = { source = src }
      if ad and ad.needs_grad[out] then p.grads[out] = { source = src } end
    elseif pp.link[out] then
      p.acts[out] = { source = pp.link[out].src }
      if ad and ad.needs_grad[out] then p.grads[out] = { source = pp.link[out].src } end
    else
      p.acts[out] = alloc("acts", "nacts", out.shape, pp.fmt[out])
      if ad and ad.needs_grad[out] then
        p.grads[out] = reuse and { shape = out.shape, fmt = pp.fmt[out] } or alloc("grads", "ngrads", out.shape, pp.fmt[out])
      end
    end
    -- what the op keeps for its backward (gen/ops.lua)
    if rule.saves then
      p.saves[node] = {}
      for _, s in ipairs(rule.saves(node, target and { backend = target.backend, gemm_attention = target.gemm_attention, root = root })) do
        local n = s.per_sample and s.per_sample * batch_max or s.count
        if s.dtype == "int32" then
          p.saves[node][s.name] = { offset = p.nint, numel = n, arena = "ints" }
          p.nint = p.nint + align(n)
        else
          local e = alloc("acts", "nacts", { n }, compute)
          p.saves[node][s.name] = e
        end
      end
    end
  end
  if reuse and ad then plan.reuse_grads(p, trace, ad, pp, slot, target.fused) end
  return p
end

-- The activation gradients' slots by liveness over the backward (ad.backward, in run
-- order; the loss's gradient is set before it, at time 0): a gradient lives from its
-- first writer (the backward of the first consumer to run) to its reader (its
-- producer's backward).  First fit by offset among the slots live at a gradient's start,
-- in order of start.  Views and folded casts write nothing of their own.
-- `fused` (gen/fuse.lua's chains): a chain's backward is one kernel, at its head's
-- backward: the members' backwards write nothing, the chain's last output's gradient is
-- read there, and its other gradients stay in registers (a slot live only there).
function plan.reuse_grads(p, trace, ad, pp, slot_of, fused)
  local function root(t) return plan.storage_root(p, t) end
  local first, last = {}, {}
  local function touch(r, i, writer)
    if not p.grads[r] or p.grads[r].source then return end
    if writer and not first[r] then first[r] = writer end
    last[r] = i
  end
  local span = {}
  local loss = root(trace.outputs[1])
  if p.grads[loss] then span[loss] = 0 end
  p.first, p.param_first = {}, {}
  local param_seen = {}
  for i, node in ipairs(ad.backward) do
    local chain = fused and fused.group_of[node]
    if chain and chain.head ~= node then
      -- a chain member: its backward runs in the head's kernel
    elseif not (ops[node.op].alias or pp.folded[node]) then
      local writes, pwrites = {}, {}
      for k, x in ipairs(node.inputs) do
        if ad.grad_inputs[node][k] then
          local r = root(x)
          if p.grads[r] and not p.grads[r].source then
            writes[r] = (writes[r] or 0) + 1
            touch(r, i, node)
            span[r] = span[r] or i
          elseif r.param then
            pwrites[r] = (pwrites[r] or 0) + 1
          end
        end
      end
      for r, count in pairs(writes) do
        if first[r] == node then
          p.first[node] = p.first[node] or {}
          p.first[node][r] = count
        end
      end
      -- a parameter's gradient: its first writer may store it after zero_grad (gen/kernels_c.lua)
      for r, count in pairs(pwrites) do
        if not param_seen[r] then
          param_seen[r] = true
          p.param_first[node] = p.param_first[node] or {}
          p.param_first[node][r] = count
        end
      end
      local reads = { node.out }
      if chain then   -- the chain's gradient read here: its last output's
        reads[1] = chain.members[#chain.members].out
        for _, m in ipairs({ node, table.unpack(chain.members, 1, #chain.members - 1) }) do
          local r = root(m.out)
          if p.grads[r] and not p.grads[r].source then span[r] = span[r] or i; touch(r, i) end
        end
      end
      for _, t in ipairs(reads) do
        local r = root(t)
        span[r] = span[r] or i   -- read before any write: the node zeroes it first
        if p.grads[r] and not first[r] and r ~= loss then
          first[r] = node
          p.first[node] = p.first[node] or {}
          p.first[node][r] = 0
        end
        touch(r, i)
      end
    end
  end
  -- in order of start (then of the trace, for identical output), first fit by offset
  local order = {}
  for r, g in pairs(p.grads) do
    if not g.source and not span[r] then span[r], last[r] = 0, math.huge end   -- (none seen: live throughout)
  end
  for r in pairs(span) do order[#order + 1] = r end
  local index = {}
  for i, node in ipairs(trace.nodes) do index[node.out] = i end
  table.sort(order, function(a, b)
    if span[a] ~= span[b] then return span[a] < span[b] end
    return index[a] < index[b]
  end)
  local live = {}   -- { offset, bytes, last }, by offset
  for _, r in ipairs(order) do
    local g = p.grads[r]
    local slot, bytes = slot_of("grads", g.shape, g.fmt)
    local kept = {}
    for _, s in ipairs(live) do if s.last >= span[r] then kept[#kept + 1] = s end end
    live = kept
    local off = 0
    for _, s in ipairs(live) do
      if off + bytes <= s.offset then break end
      off = math.max(off, s.offset + s.bytes)
    end
    slot.offset = off
    p.grads[r] = slot
    live[#live + 1] = { offset = off, bytes = bytes, last = last[r] or span[r] }
    table.sort(live, function(a, b) return a.offset < b.offset end)
    p.ngrads = math.max(p.ngrads, off + bytes)
  end
  p.reuse = true
end

return plan
