-- operands: the one operand and storage context both backends build on.  For the
-- lowered table `l` (gen/pipeline.lua) it answers, the same way for the C kernels
-- (gen/kernels_c.lua) and the CUDA program (gen/emit_cuda.lua):
--   where a tensor's storage is     e.place(t), e.grad_place(t), e.save_place(node, name),
--                                   e.state_entry(node, name) (a module buffer or counter),
--                                   e.counter(node, name)
--   in which formats it is read     e.chain(t): { storage } or { storage, view }
--                                   (gen/precision.lua), e.fmt(t), e.root(t)
--   how large it is                 e.numel(t), e.rows(t, k), e.outer(t, d), e.batch(t):
--                                   C expressions (or Sizes), the batch dim as hooks.batch;
--                                   e.count_max(shape, from, to): a number, at the largest batch
--   a float constant                e.lit(v)
--   the op being emitted            e.begin(node, phase[, out]); e.node, e.phase, e.out
--   the conversions of its operands e.record(t, what, how, formats): one row of the
--                                   precision plan's table (e.operands)
-- hooks (the backend's, passed explicitly; nothing is kept between calls):
--   batch        the batch size in a size expression ("B", or "(long long)B" where
--                sizes are long long)
--   literal(v)   a float literal of the backend's language
--   default      the format of a tensor the plan has none for (a backend's temporaries)
--   sizes_as_values   e.numel, e.rows, e.outer, e.batch give numbers and Sizes (below),
--                which render as the same C text, instead of strings
--   counter(offset)      the C expression of a pointer to counter `offset` (e.counter)
--   begin(node, phase)   the backend's reset at each op (optional)
local util = require "util"
local precision = require "precision"

local operands = {}

---------------------------------------------------------------------------
-- Sizes that name the batch size B stay values until emission: a Size is a count of
-- elements, a product of numbers and B, that tostring() writes as its C expression
-- (the text the CUDA program has always had) and :at(batch) evaluates.  Kinds:
--   count     per · B, written as util.count_expr writes it ("(long long)B * 12")
--   product   factors (numbers and Sizes) written by a pattern: times(n, k) is
--             "(long long)(n) * k", scaled(k, n) "(long long)k * n", by(n, k)
--             "(long long)n * k"; batches(dims) a matmul's batch dims, "((long long)B * n)"
local Size = {}
Size.__index = Size
operands.Size = Size
-- true for a number or a Size (what a kernel's or a GEMM's size may be)
function operands.is_size(v) return math.type(v) == "integer" or getmetatable(v) == Size end
function Size.__tostring(s)
  if s.kind == "count" then return s.per == 1 and s.b or (s.b .. " * " .. s.per) end
  local args = {}
  for i, f in ipairs(s.factors) do args[i] = tostring(f) end
  return string.format(s.pattern, table.unpack(args))
end
function Size.__concat(a, b) return tostring(a) .. tostring(b) end
-- its number of elements when the batch is `batch` long
function Size:at(batch)
  if self.kind == "count" then return self.per * batch end
  local n = 1
  for _, f in ipairs(self.factors) do n = n * (math.type(f) and f or f:at(batch)) end
  return n
end
local function product(pattern, ...)
  local factors = table.pack(...)
  for i = 1, factors.n do assert(operands.is_size(factors[i]), "a size is a number or a Size") end
  factors.n = nil
  return setmetatable({ kind = "product", pattern = pattern, factors = factors }, Size)
end
function operands.times(n, k) return product("(long long)(%s) * %s", n, k) end
function operands.scaled(k, n) return product("(long long)%s * %s", k, n) end
function operands.by(n, k) return product("(long long)%s * %s", n, k) end
Size.__mul = operands.times

-- The elements of dims from..to of `shape`: a number, or (B among them) a count Size
-- with the batch size written `b`
function operands.count(shape, from, to, b)
  local per, batched = 1, false
  for i = from or 1, to or #shape do
    if shape[i] == "B" then batched = true else per = per * shape[i] end
  end
  if not batched then return per end
  return setmetatable({ kind = "count", per = per, batched = true, b = b or "B" }, Size)
end
-- The product of a matmul's batch dims (a Size, B among them or not)
function operands.batches(dims)
  local per, batched = 1, false
  for _, v in ipairs(dims) do if v == "B" then batched = true else per = per * v end end
  if not batched then return product("%s", per) end
  return product("((long long)%s * %s)", operands.count({ "B" }), per)
end

function operands.context(l, hooks)
  local p, pp, st, g = l.plan, l.pp, l.state, l.graph
  local e = { operands = {}, phase = "forward", node = nil }

  -- the next tensor toward the storage: a view's input, a folded cast's other end
  local function next_of(t)
    local a = p.acts[t]
    return a and a.source or nil
  end
  e.root = l.root
  function e.chain(t) return precision.chain(pp, t, next_of, hooks.default) end
  function e.fmt(t) return pp.fmt[t] end

  -- the storage of t (its root's): { arena = "params" | "batch" | "acts", offset
  -- (elements of params; bytes of acts), root, fmt (the root's format, nil if none) }
  function e.place(t)
    local r = l.root(t)
    if r.param then
      -- FULL_SHARD: params is the gathered buffer of the parameter's unit (gen/plan.lua)
      local e = st.by_name[r.param]
      return { arena = "params", offset = e.gathered or e.offset, unit = e.unit, root = r, fmt = pp.fmt[r] }
    end
    if r.input then return { arena = "batch", root = r } end
    return { arena = "acts", offset = p.acts[r].offset, root = r, fmt = pp.fmt[r] }
  end
  -- the storage of t's gradient: { arena = "grads" | "dacts", offset, root, fmt }, or
  -- nil where t has none (not a parameter, and nothing it feeds needs a gradient)
  function e.grad_place(t)
    local r = l.root(t)
    if r.param then
      if g.frozen and g.frozen[r.param] then return nil end   -- requires_grad = False: no gradient computed
      -- FULL_SHARD: grads is the units' gradient buffers (gen/plan.lua)
      local e = st.by_name[r.param]
      return { arena = "grads", offset = e.grad_at or e.offset, root = r, fmt = pp.fmt[r] }
    end
    local gr = p.grads[r]
    if not gr or not l.autodiff.needs_grad[r] then return nil end
    return { arena = "dacts", offset = gr.offset, root = r, fmt = pp.fmt[r] }
  end
  -- SyncBatchNorm (gen/strategy.lua's `synced`): whether `node`'s batch statistics are the
  -- global batch's (the backend's e.ranks_sum(ptr, n) sums n doubles over the ranks)
  function e.synced(node)
    local s = l.strategy
    return not l.inference and s and s.synced and s.synced[node] ~= nil
  end
  -- a buffer an op saves for its backward: { arena = "acts" | "ints", offset }
  function e.save_place(node, name) return p.saves[node][name] end
  -- a module's buffer or counter `name` (the plan's state entry, nil if the module has
  -- none) and its full name
  function e.state_entry(node, name)
    local full = (g.prefix_of[node.module] or "") .. name
    return st.by_name[full], full
  end

  -- a module's int64 counter (num_batches_tracked): the backend's pointer to it, or "NULL"
  function e.counter(node, name)
    local s = e.state_entry(node, name)
    return s and hooks.counter(s.offset) or "NULL"
  end

  -- sizes; e.uses_B: some size named the batch size (else a C function says (void)B)
  local function sized(shape, from, to, b)
    for i = from or 1, to or #shape do
      if shape[i] == "B" then e.uses_B = true end
    end
    if hooks.sizes_as_values then return operands.count(shape, from, to, b or hooks.batch) end
    return util.count_expr(shape, from, to, b or hooks.batch)
  end
  function e.numel(t) return sized(t.shape) end
  function e.rows(t, k) return sized(t.shape, 1, #t.shape - k) end
  -- the product of the dims before dim d (1-based)
  function e.outer(t, d) return sized(t.shape, 1, d - 1) end
  function e.batch(t) return sized(t.shape, 1, 1, "B") end
  -- elements of dims from..to of `shape` at the largest batch (a number)
  function e.count_max(shape, from, to)
    return util.numel(table.move(shape, from or 1, to or #shape, 1, {}), l.batch_max)
  end
  e.lit = hooks.literal

  -- out: the tensor the op's kernels write in the forward (and whose gradient they read in
  -- the backward): the node's output, or a chain's last (gen/fuse.lua's chains)
  function e.begin(node, phase, out)
    e.node, e.phase, e.out = node, phase, out or (node and node.out)
    if hooks.begin then hooks.begin(node, phase) end
  end

  -- an operand of the op being emitted, for the precision plan's table: tensor t's
  -- `what` ("value", "grad", "buffer NAME"), read through `formats` (default: its
  -- chain), `how` ("load", "store", "accum", "update"); count: its elements at the
  -- largest batch
  function e.record(t, what, how, formats)
    local c = formats or e.chain(t)
    local rec = { node = e.node, phase = e.phase, tensor = t, what = what, storage = c[1], view = c[2] or c[1],
                  how = how, count = e.count_max(t.shape) }
    e.operands[#e.operands + 1] = rec
    return rec
  end
  return e
end

return operands
