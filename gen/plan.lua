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
-- (FULL_SHARD), the units (plan.units).
function plan.state(g, unit_of)
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
  if unit_of then plan.units(st, unit_of) end
  return st
end

-- FSDP's FULL_SHARD (gen/strategy.lua's `unit_of[parameter name]`, a unit's key): the
-- units as ranges of the parameter arena, each a run of consecutive parameters with one
-- key (a key met again after another's run is a unit of its own), { first, count (in
-- elements, with the alignment padding), params, key }; each parameter's `unit` and
-- `gathered` offset, where the kernels read it: in the one buffer a unit is gathered into.
function plan.units(st, unit_of)
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
end

-- Activation layout of one trace (with its autodiff result `ad`, or nil for an
-- inference-only entry point) under the precision plan `pp` (gen/precision.lua).
-- Offsets and sizes of the two activation arenas are in bytes: each tensor is
-- stored in its own format, and a tensor linked to another by a folded cast has
-- no storage of its own.  Saved values are in the compute type.  `target` ({ backend,
-- gemm_attention }) is what an op's saves rule may ask (gen/ops.lua: fused attention on CUDA).
function plan.activations(trace, ad, batch_max, pp, target)
  local FORMATS = require("precision").FORMATS
  local compute = pp.settings.compute
  local p = { acts = {}, grads = {}, saves = {}, nacts = 0, ngrads = 0, nint = 0, batch_max = batch_max }
  local function root(t)   -- the tensor whose storage t is (views, folded casts: so far)
    while p.acts[t] and p.acts[t].source do t = p.acts[t].source end
    return t
  end
  local function alloc(field, count_field, shape, fmt)
    local per, batched = sizes(shape)
    local n = batched and per * batch_max or per
    local off = p[count_field]
    p[count_field] = p[count_field] + align((n * FORMATS[fmt].bytes + 3) // 4) * 4   -- 64-byte aligned
    return { offset = off, numel = n, arena = field, fmt = fmt, batched = batched }
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
      if ad and ad.needs_grad[out] then p.grads[out] = alloc("grads", "ngrads", out.shape, pp.fmt[out]) end
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
  return p
end

return plan
