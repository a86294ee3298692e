-- fuse_cuda: the CUDA kernels of gen/fuse.lua's groups, built from the pointwise ops'
-- scalar descriptions (the `pointwise` rules of gen/ops_cuda.lua).  A group's forward
-- kernel evaluates its members at one element, keeping in registers the values fuse.lua
-- did not mark stored; its backward kernel recomputes or loads those values and adds
-- each gradient in its format; a tail group becomes the st_<name> store macro of its
-- producer's kernel.  Every pointwise op is in a group (a singleton at least), so these
-- are the only kernels of pointwise ops.  Called by gen/emit_cuda.lua with its context
-- `e` (see gen/ops_cuda.lua's header) and the fuse plan `fz`.
local fuse = require "fuse"
local ops_cuda = require "ops_cuda"

local fuse_cuda = {}

local GRID = ops_cuda.GRID

local function hash(s)
  local h = 2166136261
  for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
  return string.format("%08x", h)
end

-- A size or stride as the kernel writes it: a number, or (a tensor whose batch dimension
-- is not first) an expression of B, which the kernel knows as `bx` ("(n / 24)": its count
-- over the elements of one batch row; "nb": a parameter)
local function cx(v, bx)
  if math.type(v) == "integer" then return tostring(v) end
  assert(bx, "a fused kernel with a batch dimension inside a tensor knows B")
  return "(" .. tostring(v):gsub("%f[%w_]B%f[^%w_]", bx) .. ")"
end
local function inner_of(shape, d)
  local n, batched = 1, false
  for i = d + 1, #shape do
    if shape[i] == "B" then batched = true else n = n * shape[i] end
  end
  return batched and (n == 1 and "B" or "B * " .. n) or n
end
-- B in a kernel over `count` elements of a tensor of `shape` (nil: none there)
local function b_of(shape)
  local per, batched = 1, false
  for _, d in ipairs(shape) do if d == "B" then batched = true else per = per * d end end
  return batched and string.format("(n / %d)", per) or nil
end
-- the offset into t of element I of `out` (t broadcast to out's shape)
local function offset_expr(t, out, I, bx)
  if fuse.full(t, out) then return I end
  local s = fuse.bcast_strides(t.shape, out.shape)
  local terms = {}
  for d = 1, #out.shape do
    if s[d] ~= 0 and out.shape[d] ~= 1 then
      local inner = cx(inner_of(out.shape, d), bx)
      local idx = d == 1 and string.format("%s / %s", I, inner) or string.format("%s / %s %% %s", I, inner, cx(out.shape[d], bx))
      terms[#terms + 1] = s[d] == 1 and string.format("(%s)", idx) or string.format("(%s) * %s", idx, cx(s[d], bx))
    end
  end
  return #terms == 0 and "0" or table.concat(terms, " + ")
end

-- kernel operands and parameters, deduplicated
local function builder()
  local b = { ops = {}, seen = {}, params = {}, args = {} }
  function b.operand(key, operand, mode)
    local k = key .. "|" .. mode
    if b.seen[k] then return b.seen[k] end
    local name = "fz" .. (#b.ops + 1)
    b.ops[#b.ops + 1] = { name, operand, mode }
    b.seen[k] = name
    return name
  end
  -- a member's parameters under unique names; `which` picks the host expression
  function b.member_params(j, desc, which)
    local P = {}
    for _, p in ipairs(desc.params) do
      local name = string.format("m%d_%s", j, p[2])
      P[p[2]] = name
      b.params[#b.params + 1] = p[1] .. " " .. name
      b.args[#b.args + 1] = { p[1], which == "forward" and p[3] or p[4] }
    end
    return P
  end
  return b
end

local list_of = fuse.nodes

-- The forward of the group's pointwise members at element I, as lines; `head_value`:
-- the C expression of the head's value (tail groups).  Values kept in registers are
-- rounded as a store and a load would round them, and passed on through so_keep (no
-- FMA across ops), so fusing changes no arithmetic.
local function forward_lines(e, g, fz, b, I, head_value, bx)
  local R = fz.resolve
  local lines, reg = {}, {}
  if g.head then
    local hv = e.val(g.head.out)
    lines[#lines + 1] = string.format("const float v0 = %s;", head_value)
    lines[#lines + 1] = string.format("const float r0 = so_keep(so_round_%s(so_round_%s(v0)));", hv.S, hv.V)
    reg[R(g.head.out)] = "r0"
  end
  for j, m in ipairs(g.members) do
    local desc = ops_cuda[m.op].pointwise(m)
    local P = b.member_params(j, desc, "forward")
    local x = {}
    for k, t in ipairs(m.inputs) do
      local r = R(t)
      if reg[r] then
        x[k] = string.format("so_round_%s(%s)", e.val(t).V, reg[r])
      else
        x[k] = string.format("ld_%s(%s)", b.operand("t" .. t.id, e.val(t), "r"), offset_expr(t, m.out, I, bx))
      end
    end
    local ov = e.val(m.out)
    lines[#lines + 1] = string.format("const float v%d = %s;   /* %s */", j, desc.value(x, P, I), m.op)
    lines[#lines + 1] = string.format("const float r%d = so_keep(so_round_%s(so_round_%s(v%d)));", j, ov.S, ov.V, j)
    reg[R(m.out)] = "r" .. j
    if g.stored[R(m.out)] then
      lines[#lines + 1] = string.format("st_%s(%s, v%d);", b.operand("t" .. m.out.id, ov, "w"), I, j)
    end
  end
  -- registers nothing reads
  local used = {}
  for _, l in ipairs(lines) do
    for name in l:gmatch("%f[%w_](r%d+)%f[^%w_]") do used[name] = (used[name] or 0) + 1 end
  end
  local kept = {}
  for _, l in ipairs(lines) do
    local def = l:match("^const float (r%d+) =")
    if not def or used[def] > 1 then kept[#kept + 1] = l end
  end
  return kept
end

-- the forward kernel of a pointwise group, launched where the group's first member runs
function fuse_cuda.group_forward(e, g, fz)
  local first = g.members[1]
  local b = builder()
  local body = forward_lines(e, g, fz, b, "i", nil, b_of(first.out.shape))
  local keys = {}
  for _, m in ipairs(g.members) do keys[#keys + 1] = ops_cuda[m.op].pointwise(m).key end
  local params = "long long n" .. (#b.params > 0 and (", " .. table.concat(b.params, ", ")) or "")
  local src = GRID .. " {\n        " .. table.concat(body, "\n        ") .. "\n    }"
  local k = e.kernel { kind = table.concat(keys, "_") .. "_" .. hash(src), ops = b.ops, params = params, body = src }
  local args = { { "long long", e.numel(first.out) } }
  for _, a in ipairs(b.args) do args[#args + 1] = a end
  return e.launch(k, b.ops, args, { grid = e.numel(first.out) })
end

-- A tail group's store: the macro st_<name>(i, v) that replaces the producer kernel's
-- store of its output, and the operands and parameters the tail adds to that kernel
-- (appended to `ops`: the caller launches with the same list).
function fuse_cuda.tail_store(e, g, fz, name, operand, ops)
  local b = builder()
  local lines = forward_lines(e, g, fz, b, "fi_", "(v_)")
  if g.stored[fz.resolve(g.head.out)] then
    table.insert(lines, 3, string.format("%s[fi_] = so_narrow_%s(so_round_%s(v0));", name, operand.S, operand.V))
  end
  for _, o in ipairs(b.ops) do ops[#ops + 1] = o end
  for i, p in ipairs(b.params) do
    local ctype, pname = p:match("^(.-) (%S+)$")
    ops[#ops + 1] = { pname, { scalar = ctype, expr = b.args[i][2] }, "p" }
  end
  return string.format("#define st_%s(i_, v_) do { const long long fi_ = (i_); \\\n    %s \\\n} while (0)", name,
    table.concat(lines, " \\\n    "))
end

-- the backward kernel of a group (its pointwise members: a tail's producer runs its own
-- backward after it), launched where the group's first member's backward runs.  Values
-- of the chain are loaded when stored, else recomputed from the group's inputs; the
-- gradients of tensors only the chain reads stay in registers, rounded as the buffer
-- would round them.  A singleton's broadcast operand gets its gradient from a kernel
-- of its own, which sums over the broadcast dims in the CPU kernel's order.
function fuse_cuda.group_backward(e, g, fz)
  local R = fz.resolve
  local b = builder()
  local I = "i"
  local bx = b_of(g.members[1].out.shape)   -- (the kernel runs over its elements)
  local lines, deferred = {}, {}
  local producer = {}          -- resolved tensor -> member index (0: the head)
  local list = list_of(g)
  if g.head then producer[R(g.head.out)] = 0 end
  for j, m in ipairs(g.members) do producer[R(m.out)] = j end
  local descs, P = {}, {}
  for j, m in ipairs(g.members) do
    descs[j] = ops_cuda[m.op].pointwise(m)
    P[j] = b.member_params(j, descs[j], "backward")
  end
  -- values: loaded when stored, else recomputed (memoised)
  local val = {}
  local function value(r)
    if val[r] then return val[r] end
    local j = producer[r]
    local m = list[g.head and j + 1 or j]
    local name = "b" .. j
    if g.stored[r] then
      local ov = e.val(m.out)
      local p = b.operand("t" .. m.out.id, ov, "r")
      lines[#lines + 1] = string.format("const float %s = so_widen_%s(%s[%s]);", name, ov.S, p, I)
    else
      assert(j ~= 0, "a tail's producer value the backward needs is stored (gen/fuse.lua)")
      local x = {}
      for k, t in ipairs(m.inputs) do
        local rk = R(t)
        if producer[rk] then x[k] = string.format("so_round_%s(%s)", e.val(t).V, value(rk))
        else x[k] = string.format("ld_%s(%s)", b.operand("t" .. t.id, e.val(t), "r"), offset_expr(t, m.out, I, bx)) end
      end
      local ov = e.val(m.out)
      lines[#lines + 1] = string.format("const float %s = so_keep(so_round_%s(so_round_%s(%s)));   /* %s, recomputed */", name, ov.S, ov.V,
        descs[j].value(x, P[j], I), m.op)
    end
    val[r] = name
    return name
  end
  local dreg = {}   -- gradients kept in registers: resolved tensor -> variable
  for j = #g.members, 1, -1 do
    local m = g.members[j]
    local dy = e.grad(m.out)
    if dy then
      local r = R(m.out)
      local gname = "g" .. j
      if dreg[r] then
        lines[#lines + 1] = string.format("const float %s = so_keep(so_round_%s(%s));", gname, dy.V, dreg[r])
      else
        lines[#lines + 1] = string.format("const float %s = ld_%s(%s);", gname, b.operand("g" .. m.out.id, dy, "a"), I)
      end
      local x = setmetatable({}, { __index = function(_, k)
        local t = m.inputs[k]
        local rk = R(t)
        if producer[rk] then return string.format("so_round_%s(%s)", e.val(t).V, value(rk)) end
        return string.format("ld_%s(%s)", b.operand("t" .. t.id, e.val(t), "r"), offset_expr(t, m.out, I, bx))
      end })
      local function y() return string.format("so_round_%s(%s)", e.val(m.out).V, value(r)) end
      for k, t in ipairs(m.inputs) do
        local dx = e.grad(t)
        local f = descs[j].grad[k]
        if dx and f then
          local rk = R(t)
          if producer[rk] and not g.stored[rk] and producer[rk] ~= 0 then
            -- only the chain reads it: its gradient stays in a register
            local c = f(gname, x, y, P[j], I)
            if not dreg[rk] then
              dreg[rk] = "d" .. producer[rk]
              lines[#lines + 1] = string.format("float %s = 0.0f;", dreg[rk])
            end
            lines[#lines + 1] = string.format("%s = so_keep(so_round_%s(%s + so_round_%s(%s)));", dreg[rk], dx.S, dreg[rk], dx.V, c)
          elseif producer[rk] or fuse.full(t, m.out) then
            local c = f(gname, x, y, P[j], I)   -- first: it may add the lines of the values it reads
            lines[#lines + 1] = string.format("acc_%s(%s, %s);", b.operand("g" .. t.id, dx, "a"), I, c)
          else
            assert(#g.members == 1 and not g.head, "a broadcast operand's gradient in a fused group (gen/fuse.lua)")
            deferred[#deferred + 1] = k
          end
        end
      end
    end
  end
  local out = {}
  if #lines > 0 then
    local keys = {}
    for j, m in ipairs(g.members) do keys[#keys + 1] = descs[j].key end
    local params = "long long n" .. (#b.params > 0 and (", " .. table.concat(b.params, ", ")) or "")
    local src = GRID .. " {\n        " .. table.concat(lines, "\n        ") .. "\n    }"
    local k = e.kernel { kind = table.concat(keys, "_") .. "_grad_" .. hash(src), ops = b.ops, params = params, body = src }
    local args = { { "long long", e.numel(g.members[1].out) } }
    for _, a in ipairs(b.args) do args[#args + 1] = a end
    out = e.launch(k, b.ops, args, { grid = e.numel(g.members[1].out) })
  end
  for _, k in ipairs(deferred) do
    for _, l in ipairs(fuse_cuda.broadcast_grad(e, g.members[1], descs[1], k)) do out[#out + 1] = l end
  end
  return out
end

-- The gradient of a broadcast operand k of pointwise node n: one thread per element of
-- the operand, summing the contributions of the output elements it was broadcast to in
-- the CPU kernel's order (the broadcast dims as nested loops, outermost first).
function fuse_cuda.broadcast_grad(e, n, desc, k)
  local t, out = n.inputs[k], n.out
  local s = fuse.bcast_strides(t.shape, out.shape)
  local b = builder()
  local P = b.member_params(1, desc, "backward")
  local dt = e.grad(t)
  local name = b.operand("dt", dt, "a")
  local lines = {}
  local idx = {}
  local loops = {}
  for d = 1, #out.shape do
    if out.shape[d] == 1 then
      idx[d] = nil
    elseif s[d] ~= 0 then
      idx[d] = string.format("(u / %s%s)", cx(s[d], "nb"), d == 1 and "" or string.format(" %% %s", cx(out.shape[d], "nb")))
    else
      local v = "j" .. d
      idx[d] = v
      loops[#loops + 1] = string.format("for (long long %s = 0; %s < %s; %s++)", v, v, out.shape[d] == "B" and "nb" or tostring(out.shape[d]), v)
    end
  end
  local function offset(strides)
    local terms = {}
    for d = 1, #out.shape do
      if idx[d] and strides[d] ~= 0 then terms[#terms + 1] = strides[d] == 1 and idx[d] or string.format("%s * %s", idx[d], cx(strides[d], "nb")) end
    end
    return #terms == 0 and "0" or table.concat(terms, " + ")
  end
  local ostr = {}
  for d = 1, #out.shape do ostr[d] = inner_of(out.shape, d) end
  local x = {}
  for kk, u in ipairs(n.inputs) do
    x[kk] = string.format("ld_%s(%s)", b.operand("t" .. u.id, e.val(u), "r"), offset(fuse.bcast_strides(u.shape, out.shape)))
  end
  local gexpr = string.format("ld_%s(%s)", b.operand("dy", e.grad(out), "r"), offset(ostr))
  lines[#lines + 1] = string.format("float s = so_widen_%s(%s[u]);", dt.S, name)
  lines[#lines + 1] = table.concat(loops, " ") .. (#loops > 0 and " " or "") ..
    string.format("s = s + %s;", desc.grad[k](gexpr, x, function() error("no output value here") end, P, "u"))
  lines[#lines + 1] = string.format("st_%s(u, s);", name)
  local body = "for (long long u = (long long)blockIdx.x * blockDim.x + threadIdx.x; u < n; u += (long long)gridDim.x * blockDim.x) {\n        " ..
    table.concat(lines, "\n        ") .. "\n    }"
  local params = "long long n, long long nb" .. (#b.params > 0 and (", " .. table.concat(b.params, ", ")) or "")
  local kk = e.kernel { kind = desc.key .. "_grad" .. k .. "_bcast_" .. hash(body), ops = b.ops, params = params, body = body }
  local args = { { "long long", e.numel(t) }, { "long long", "B" } }
  for _, a in ipairs(b.args) do args[#args + 1] = a end
  return e.launch(kk, b.ops, args, { grid = e.numel(t) })
end

return fuse_cuda
