-- fuse: groups elementwise ops into single kernels.  Runs on the precision-folded
-- trace after autodiff (it needs to know who reads what, forward and backward) and
-- decides, for every tensor inside a group, whether it must still be stored or lives
-- only in registers.  Backend-neutral: the backend says which ops are pointwise
-- (`describe(node)`: the op's scalar description, or nil) and which producers can take
-- an elementwise tail (`tail_of(node, reader)`: "kernel" — the tail goes into the store of
-- a kernel the producer already runs — "epilogue" — a GEMM epilogue of one activation,
-- when the backend's library has it for `reader` — or nil).
--
-- Groups (each node is in at most one):
--   pointwise  a chain of pointwise ops: member k+1 reads member k's output (through
--              views and folded casts); its other operands are produced before the
--              chain's first member, so the one kernel can run where the chain starts.
--              A singleton is a group too: every pointwise op's kernel is a group's.
--   tail       a producer (conv2d, batch_norm, linear) + such a chain after it.
-- The hook for a producer (layer_norm, say): set `tail = "kernel"` on its ops_cuda rule.
-- Its kernels must store each element of its output once, through the st_<name> macro
-- of the output's operand, and never read it back: the tail replaces that macro.
-- A member whose broadcast operand (a bias-like (K) added to (M, K)) needs a gradient
-- stays a singleton: its reduction over the broadcast dims is a kernel of its own.
--
-- A tensor of a group is stored when it is read by a node outside the group (whose
-- forward or backward then reads it), is an output of the trace (the loss, the model's
-- output), or (a tail's producer output) is needed by the chain's backward: the fused
-- backward recomputes every other value of the chain from the group's inputs in
-- registers.  Gradients of tensors that only the chain reads never go to memory.
local util = require "util"

local fuse = {}

-- the tensor a read of t resolves to: through views and folded casts to its source.
-- `producer` maps a tensor to the node of the precision pass's trace that makes it (a
-- tensor's own .node is the traced graph's, before the casts went in).
local function resolver(pp, is_alias, producer)
  return function(t)
    while t and producer[t] and (is_alias(producer[t]) or (producer[t].op == "cast" and pp.folded[producer[t]])) do
      t = producer[t].inputs[1]
    end
    return t
  end
end

-- What both passes know of a trace: producer[tensor] (its node), resolve (above),
-- transparent(node) (a view or a folded cast), readers[resolved tensor] (the nodes reading
-- it: all of them with `all`, else the non-transparent ones) and outputs[resolved tensor].
local function facts(trace, pp, is_alias, all)
  local producer = {}
  for _, n in ipairs(trace.nodes) do producer[n.out] = n end
  local resolve = resolver(pp, is_alias, producer)
  local transparent = function(n) return is_alias(n) or (n.op == "cast" and pp.folded[n]) end
  local readers = {}
  for _, n in ipairs(trace.nodes) do
    if all or not transparent(n) then
      for i = 1, #n.inputs do
        local r = resolve(n.inputs[i])
        if r then
          readers[r] = readers[r] or {}
          readers[r][#readers[r] + 1] = n
        end
      end
    end
  end
  local outputs = {}
  for i = 1, (trace.outputs and trace.outputs.n or 0) do
    if trace.outputs[i] then outputs[resolve(trace.outputs[i])] = true end
  end
  return producer, resolve, transparent, readers, outputs
end

fuse.bcast_strides = util.bcast_strides   -- the fused kernels' operand offsets
-- does t cover every element of `out` once (no broadcast dims)?
function fuse.full(t, out)
  local s = fuse.bcast_strides(t.shape, out.shape)
  for i = 1, #out.shape do if s[i] == 0 and out.shape[i] ~= 1 then return false end end
  return true
end

-- the same number of elements (the same index space)?
local function same_count(a, b)
  local function count(t)
    local n, nb = 1, 0
    for _, d in ipairs(t.shape) do if d == "B" then nb = nb + 1 else n = n * d end end
    return n, nb
  end
  local na, ba = count(a)
  local nb, bb = count(b)
  return na == nb and ba == bb
end

-- The values a member's backward reads: { x = {[k] = true}, y = bool }, found by
-- running its gradient expressions over recording tables.
function fuse.backward_reads(desc, node, needs_grad)
  local reads = { x = {}, y = false }
  local x = setmetatable({}, { __index = function(_, k) reads.x[k] = true; return "x" .. k end })
  local P = setmetatable({}, { __index = function(_, k) return k end })
  for k, f in pairs(desc.grad) do
    if needs_grad(node.inputs[k]) then
      f("g", x, function() reads.y = true; return "y" end, P, "i")
    end
  end
  return reads
end

-- Returns { groups = { group, ... } (trace order of their first node), group_of = {[node] = group} }.
-- group = { kind = "pointwise" | "tail", head = producer (tail) or nil, members = { node, ... } (the
--           pointwise ones, in order), first = the node at which the group's kernels run,
--           stored = {[tensor] = why}, register = {[tensor] = true} (resolved tensors), epilogue = bool }
-- opts: { no_fuse = bool }
function fuse.plan(trace, pp, ad, is_alias, describe, tail_of, opts)
  opts = opts or {}
  -- readers of each resolved tensor: non-transparent nodes reading it (through views)
  local producer, resolve, transparent, readers, outputs = facts(trace, pp, is_alias, false)
  local index = {}
  for i, n in ipairs(trace.nodes) do index[n] = i end
  local function needs_grad(t) return ad.needs_grad[t] end
  -- can n be in a multi-node group at all?
  local function fusable(n)
    local d = describe(n)
    if not d then return false end
    for k = 1, #n.inputs do
      if ad.needs_grad[n.inputs[k]] and not fuse.full(n.inputs[k], n.out) then return false end
    end
    return true
  end

  local groups, group_of = {}, {}
  for _, n in ipairs(trace.nodes) do
    if not group_of[n] and not transparent(n) and (describe(n) or (tail_of(n) and not opts.no_fuse)) then
      local g = { kind = describe(n) and "pointwise" or "tail", members = {}, stored = {}, register = {} }
      local start = index[n]
      if g.kind == "tail" then g.head = n; g.epilogue = tail_of(n) == "epilogue" else g.members[1] = n end
      group_of[n] = g
      local cur = n
      local in_group = { [resolve(n.out)] = true }
      while not opts.no_fuse and (g.kind == "tail" or fusable(n)) do
        if g.epilogue and #g.members >= 1 then break end
        -- the next member: a pointwise reader of cur whose other operands are the group's or older
        local nxt
        for _, q in ipairs(readers[resolve(cur.out)] or {}) do
          -- train.log's metrics stay out of the step's groups (and it out of theirs): the
          -- step's kernels are the same with and without `log`
          local ok = not group_of[q] and fusable(q) and same_count(q.out, cur.out) and not q.metric == not n.metric
          if ok and g.epilogue then ok = tail_of(g.head, q) == "epilogue" end
          for k = 1, #q.inputs do
            local r = resolve(q.inputs[k])
            if ok and not in_group[r] and producer[r] and index[producer[r]] >= start then ok = false end
          end
          if ok then nxt = q; break end
        end
        if not nxt then break end
        g.members[#g.members + 1] = nxt
        group_of[nxt] = g
        in_group[resolve(nxt.out)] = true
        cur = nxt
      end
      if g.kind == "tail" and #g.members == 0 then
        group_of[n] = nil   -- a producer with nothing to fuse runs as it is
      else
        g.first = g.members[1]
        groups[#groups + 1] = g
      end
    end
  end

  -- what is stored: read outside the group, or an output
  for _, g in ipairs(groups) do
    local list = fuse.nodes(g)
    for i, m in ipairs(list) do
      local t = resolve(m.out)
      local why
      if outputs[t] then why = "an output of the step" end
      for _, r in ipairs(readers[t] or {}) do
        if group_of[r] ~= g then why = why or string.format("read by %s outside the group", r.op) end
      end
      if not why and i == #list then why = "read by nothing" end   -- kept: a dead end still gets its value
      if why then g.stored[t] = why else g.register[t] = true end
    end
    -- ReLU's epilogue writes the activation only: a pre-activation read elsewhere undoes
    -- the group (GELU's writes the pre-activation too, through its aux output)
    if g.epilogue and g.members[1].op == "relu" and g.stored[resolve(g.head.out)] then
      g.dissolve = true
    end
    -- a tail's producer output the chain's backward needs (it cannot be recomputed)
    if g.head and not g.dissolve then
      local h = resolve(g.head.out)
      if g.register[h] then
        local member_of = {}
        for _, m in ipairs(g.members) do member_of[resolve(m.out)] = m end
        local need_head = false
        local function need_value(t)   -- the backward needs t's value
          if t == h then need_head = true; return end
          local m = member_of[t]
          if m and g.register[t] then
            for k = 1, #m.inputs do need_value(resolve(m.inputs[k])) end
          end
        end
        for _, m in ipairs(g.members) do
          if ad.needs_grad[m.out] then
            local reads = fuse.backward_reads(describe(m), m, needs_grad)
            for k in pairs(reads.x) do need_value(resolve(m.inputs[k])) end
            if reads.y then need_value(resolve(m.out)) end
          end
        end
        if need_head then
          g.register[h] = nil
          g.stored[h] = "its value is read by the fused backward (it cannot be recomputed there)"
        end
      end
    end
  end
  -- dissolved epilogue groups: the producer runs alone, its ReLU as a singleton
  local kept = {}
  for _, g in ipairs(groups) do
    if g.dissolve then
      group_of[g.head] = nil
      local m = g.members[1]
      local s = { kind = "pointwise", members = { m }, first = m, stored = { [resolve(m.out)] = g.stored[resolve(m.out)] or "read by nothing" },
                  register = {} }
      group_of[m] = s
      kept[#kept + 1] = s
    else
      kept[#kept + 1] = g
    end
  end
  return { groups = kept, group_of = group_of, resolve = resolve }
end

-- The C backend's chains: a producer whose kernel can run its readers' ops too, in one
-- pass over memory (batch norm + ReLU [+ 2x2 max pool]).  `follows(head, members, q)`
-- (ops_cpu's `chain` rule of the head's op) says whether q may join the chain
-- head, members...; q must be the only reader of the chain's last output, read directly
-- (no view, no cast), which is no output of the step.  Returns { groups, group_of,
-- resolve } as fuse.plan, each group { kind = "chain", head, members, first = head,
-- stored (the last member's output), register (the rest: never in memory) }; the
-- backend's kernels for the head run the whole chain, forward and backward (at the
-- head's backward: gen/plan.lua keeps the last output's gradient live until there).
function fuse.chains(trace, pp, is_alias, follows)
  -- every node reading a tensor (resolved), views and casts included
  local _, resolve, transparent, readers, outputs = facts(trace, pp, is_alias, true)
  local groups, group_of = {}, {}
  for _, n in ipairs(trace.nodes) do
    if not group_of[n] and not transparent(n) and not n.metric then
      local members, cur = {}, n
      while true do
        local rs = readers[cur.out] or {}
        local q = rs[1]
        if #rs ~= 1 or outputs[cur.out] or q.metric or transparent(q) or q.inputs[1] ~= cur.out
          or not follows(n, members, q) then break end
        members[#members + 1] = q
        cur = q
      end
      if #members > 0 then
        local g = { kind = "chain", head = n, members = members, first = n, stored = {}, register = {} }
        group_of[n] = g
        for _, m in ipairs(members) do group_of[m] = g end
        g.register[n.out] = true
        for i, m in ipairs(members) do
          if i < #members then g.register[m.out] = true end
        end
        g.stored[cur.out] = outputs[cur.out] and "an output of the step" or "read by the chain's reader"
        groups[#groups + 1] = g
      end
    end
  end
  return { groups = groups, group_of = group_of, resolve = resolve }
end

-- a group's nodes in order: its producer (a tail's or an epilogue's), then its members
function fuse.nodes(g)
  local list = {}
  if g.head then list[1] = g.head end
  for _, m in ipairs(g.members) do list[#list + 1] = m end
  return list
end

-- One line per group member and per tensor (fuse_plan.tsv beside the generated program;
-- the tests read it):
--   group  ID  KIND  OPS  AT            (OPS: op names joined by +, AT: file:line of each)
--   tensor ID  tN  OP  stored|register  WHY
function fuse.tsv(fz, bytes_saved)
  local lines = { "# fuse plan: groups of more than one op, and where each of their tensors lives" }
  local id = 0
  for _, g in ipairs(fz.groups) do
    local list = fuse.nodes(g)
    if #list > 1 then
      id = id + 1
      local names, at = {}, {}
      for _, m in ipairs(list) do
        names[#names + 1] = m.op
        at[#at + 1] = m.where and string.format("%s:%d", m.where.file:match("[^/]*$"), m.where.line) or "-"
      end
      lines[#lines + 1] = table.concat({ "group", id, g.epilogue and "epilogue" or g.kind, table.concat(names, "+"),
        table.concat(at, ","), tostring(bytes_saved and bytes_saved[g] or 0) }, "\t")
      for _, m in ipairs(list) do
        local t = fz.resolve(m.out)
        lines[#lines + 1] = table.concat({ "tensor", id, "t" .. t.id, m.op, g.stored[t] and "stored" or "register",
          g.stored[t] or "only the group reads it" }, "\t")
      end
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

return fuse
