-- ops: the one op table.  Each entry holds everything the stages need to know
-- about one op: its shape rule (errors in the user's terms), its FLOP count per
-- sample and its precision class (autocast's lists: "lowp" runs in the low
-- precision, "fp32" must stay fp32, "follow" follows its input; `keeps_dtype`
-- lists inputs the class does not cast, such as batch norm's fp32 affine
-- parameters; `backward_reads_output` says the backward reads the op's output, so
-- the output cannot be stored in a narrower format than the op computed).  Later stages
-- add their own fields (vjp, kernels) here, never a per-op `if` chain elsewhere.
--
-- Shapes are lists whose entries are integers or "B" (the batch size).  `shape`
-- returns the output shape and dtype ("float" or "int64"), raising through
-- tensor.shape_error with a message that names the module as the user wrote it.
local util = require "util"

local ops = {}

local function err(node, msg)
  -- required lazily: gen/tensor.lua requires this module
  require("tensor").shape_error(node, msg)
end

local function label(node)
  return node.module and node.module.call_text or node.op
end

local function copy(t) local c = {} for i, v in ipairs(t) do c[i] = v end return c end

local function numel(shape) return util.numel(shape, 1) end

-- A dim in PyTorch's convention (0-based, negative from the end) → 1-based index.
local function norm_dim(node, d, ndim)
  local i = d < 0 and d + ndim or d
  if i < 0 or i >= ndim then
    err(node, string.format("%s: dim %d is out of range for a %d-d tensor (expected in [%d, %d])",
      label(node), d, ndim, -ndim, ndim - 1))
  end
  return i + 1
end

-- How a flattened dimension came about, for messages: "128×8×8".
local function describe_dim(t, i)
  local f = t.factors and t.factors[i]
  if f then return string.format("%d (%s)", t.shape[i], f) end
  return tostring(t.shape[i])
end

local function expect_float(node, t, what)
  if t.dtype ~= "float" then
    err(node, string.format("%s expects a floating-point %s, gets %s", label(node), what or "input", t.dtype))
  end
end

-- numpy/PyTorch broadcasting, with "B" matching only "B" or 1.
local function broadcast(node, a, b)
  local na, nb = #a, #b
  local n = math.max(na, nb)
  local out = {}
  for i = 1, n do
    local da = a[na - n + i] or 1
    local db = b[nb - n + i] or 1
    if da == db then out[i] = da
    elseif da == 1 then out[i] = db
    elseif db == 1 then out[i] = da
    else
      err(node, string.format("%s: shapes %s and %s cannot be broadcast together (dim %d: %s vs %s)",
        node.attrs.as or node.op, util.shape_str(a), util.shape_str(b), i - 1, tostring(da), tostring(db)))
    end
  end
  return out
end

local function elementwise_flops(node) return numel(node.out.shape) end

-- The elements of shape[from..]: a number, or where the batch dim is among them (a
-- tensor whose batch dim is not first) the C expression util.count_expr writes ("B * 8"),
-- which only the C backend meets (the CUDA backend refuses such tensors: ops_cuda.supported)
local function inner_count(shape, from)
  for i = from, #shape do
    if shape[i] == "B" then return util.count_expr(shape, from) end
  end
  return util.numel({ table.unpack(shape, from) })
end

local function same_shape(node, x)
  expect_float(node, x)
  return copy(x.shape), x.dtype
end

---------------------------------------------------------------------------
-- Modules' ops

ops.linear = {
  arity = 3, precision = "lowp",
  shape = function(node, x, w)
    expect_float(node, x)
    local inf, outf = w.shape[2], w.shape[1]
    local n = #x.shape
    if n == 0 then err(node, label(node) .. " expects an input with at least 1 dimension, gets a scalar") end
    if x.shape[n] ~= inf then
      err(node, string.format("%s expects %d input features, gets %s", label(node), inf, describe_dim(x, n)))
    end
    local out = copy(x.shape); out[n] = outf
    return out
  end,
  flops = function(node)
    local w = node.inputs[2].shape
    local rows = numel(node.out.shape) // w[1]
    return rows * (2 * w[1] * w[2] + (node.inputs[3] and w[1] or 0))
  end,
}

-- Output size of a window op along one spatial dim (PyTorch's formula).
local function window_out(size, k, s, p, d, ceil_mode)
  local span = size + 2 * p - d * (k - 1) - 1
  local out
  if ceil_mode then
    out = -((-span) // s) + 1
    -- PyTorch: the last window must start inside the input or left padding
    if (out - 1) * s >= size + p then out = out - 1 end
  else
    out = span // s + 1
  end
  return out
end

local function spatial_input(node, x, what)
  expect_float(node, x)
  if #x.shape ~= 4 then
    err(node, string.format("%s expects a 4-d input (batch, channels, height, width), gets %d-d %s",
      label(node), #x.shape, util.shape_str(x.shape)))
  end
end

ops.conv2d = {
  arity = 3, precision = "lowp",
  shape = function(node, x, w)
    spatial_input(node, x)
    local a = node.attrs
    local cin = w.shape[2] * a.groups
    if x.shape[2] ~= cin then
      err(node, string.format("%s expects %d input channels, gets %d (input %s)",
        label(node), cin, x.shape[2], util.shape_str(x.shape)))
    end
    local out = { x.shape[1], w.shape[1] }
    for i = 1, 2 do
      local size, k, s, d = x.shape[2 + i], a.kernel_size[i], a.stride[i], a.dilation[i]
      local p = a.padding_lo and a.padding_lo[i] or a.padding[i]
      local p_total = a.padding_lo and (a.padding_lo[i] + a.padding_hi[i]) or 2 * p
      local o = (size + p_total - d * (k - 1) - 1) // s + 1
      if o < 1 then
        err(node, string.format("%s: input %s is too small for kernel size %d%s (output would be %d)",
          label(node), util.shape_str(x.shape), k, d > 1 and (" with dilation " .. d) or "", o))
      end
      out[2 + i] = o
    end
    return out
  end,
  flops = function(node)
    local w = node.inputs[2].shape
    local o = node.out.shape
    local per_out = 2 * w[2] * w[3] * w[4] + (node.inputs[3] and 1 or 0)
    return o[2] * o[3] * o[4] * per_out
  end,
}

local function pool_shape(node, x)
  spatial_input(node, x)
  local a = node.attrs
  local out = { x.shape[1], x.shape[2] }
  for i = 1, 2 do
    local k, s, p, d = a.kernel_size[i], a.stride[i], a.padding[i], a.dilation and a.dilation[i] or 1
    if p > k // 2 then
      err(node, string.format("%s: padding %d should be at most half of the kernel size %d", label(node), p, k))
    end
    local o = window_out(x.shape[2 + i], k, s, p, d, a.ceil_mode)
    if o < 1 then
      err(node, string.format("%s: input %s is too small for kernel size %d (output would be %d)",
        label(node), util.shape_str(x.shape), k, o))
    end
    out[2 + i] = o
  end
  return out
end

ops.max_pool2d = {
  arity = 1, precision = "follow", shape = pool_shape,
  flops = function(node) local a = node.attrs return numel(node.out.shape) * a.kernel_size[1] * a.kernel_size[2] end,
}
ops.avg_pool2d = {
  arity = 1, precision = "follow", shape = pool_shape,
  flops = function(node) local a = node.attrs return numel(node.out.shape) * a.kernel_size[1] * a.kernel_size[2] end,
}

-- both autocasts run batch norm in its input's dtype with fp32 parameters
ops.batch_norm = {
  arity = 3, precision = "follow", keeps_dtype = { [2] = true, [3] = true },
  shape = function(node, x)
    expect_float(node, x)
    local a = node.attrs
    local n = #x.shape
    local ok = false
    for _, allowed in ipairs(a.ndims) do if n == allowed then ok = true end end
    if not ok then
      local want = #a.ndims == 2 and string.format("a %dD or %dD", a.ndims[1], a.ndims[2]) or string.format("a %dD", a.ndims[1])
      err(node, string.format("%s expects %s input, gets %dD %s", label(node), want, n, util.shape_str(x.shape)))
    end
    if x.shape[2] ~= a.num_features then
      err(node, string.format("%s expects %d channels (dim 1), gets %s (input %s)",
        label(node), a.num_features, tostring(x.shape[2]), util.shape_str(x.shape)))
    end
    return copy(x.shape)
  end,
  flops = function(node) return 4 * numel(node.out.shape) end,
}

ops.layer_norm = {
  arity = 3, precision = "fp32",
  shape = function(node, x)
    expect_float(node, x)
    local ns = node.attrs.normalized_shape
    local n, k = #x.shape, #ns
    local ok = n >= k
    for i = 1, k do if ok and x.shape[n - k + i] ~= ns[i] then ok = false end end
    if not ok then
      err(node, string.format("%s expects the input's last dimensions to be %s, gets input %s",
        label(node), util.shape_str(ns), util.shape_str(x.shape)))
    end
    return copy(x.shape)
  end,
  flops = function(node) return 5 * numel(node.out.shape) end,
}

ops.embedding = {
  arity = 2, precision = "follow",
  shape = function(node, idx, w)
    if idx.dtype ~= "int64" then
      err(node, string.format("%s expects integer indices (a Tensor with dtype = 'int64'), gets %s", label(node), idx.dtype))
    end
    local out = copy(idx.shape); out[#out + 1] = w.shape[2]
    return out
  end,
  flops = function() return 0 end,
}

ops.dropout = { arity = 1, precision = "follow", shape = same_shape, flops = elementwise_flops }

---------------------------------------------------------------------------
-- Elementwise and activations

for _, name in ipairs { "relu", "silu", "sigmoid", "tanh", "gelu" } do
  ops[name] = { arity = 1, precision = "follow", shape = same_shape, flops = elementwise_flops,
                backward_reads_output = (name == "relu" or name == "sigmoid" or name == "tanh") }
end

local function softmax_shape(node, x)
  expect_float(node, x)
  if node.attrs.dim == nil then
    err(node, string.format("%s: dim must be given (PyTorch's implicit dim choice is deprecated)", label(node)))
  end
  norm_dim(node, node.attrs.dim, #x.shape)
  return copy(x.shape)
end
ops.softmax = { arity = 1, precision = "fp32", shape = softmax_shape, flops = function(n) return 5 * numel(n.out.shape) end,
                backward_reads_output = true }
ops.log_softmax = { arity = 1, precision = "fp32", shape = softmax_shape, flops = function(n) return 5 * numel(n.out.shape) end,
                    backward_reads_output = true }
-- both: the tensor seen as (OUTER, D, INNER) around `dim`: the dim's index (1-based, for
-- the backends' outer-size expression), D and INNER
local function softmax_layout(n)
  local x = n.inputs[1]
  local d = n.attrs.dim
  if d < 0 then d = d + #x.shape end
  return d + 1, x.shape[d + 1], inner_count(x.shape, d + 2)
end
ops.softmax.layout, ops.log_softmax.layout = softmax_layout, softmax_layout

local function binary_shape(node, a, b)
  expect_float(node, a, "operand")
  if b == nil then return copy(a.shape) end      -- tensor with a scalar
  expect_float(node, b, "operand")
  return broadcast(node, a.shape, b.shape)
end
for _, name in ipairs { "add", "sub", "mul", "div" } do
  ops[name] = { arity = 2, precision = "follow", shape = binary_shape, flops = elementwise_flops }
end

---------------------------------------------------------------------------
-- Shape ops (no arithmetic)

ops.cat = {
  precision = "follow",
  shape = function(node, ...)
    local list = { ... }
    local first = list[1].shape
    local n = #first
    local d = norm_dim(node, node.attrs.dim, n)
    local out = copy(first)
    out[d] = 0
    for i, t in ipairs(list) do
      expect_float(node, t)
      if #t.shape ~= n then
        err(node, string.format("cat: tensor %d has %d dimensions, tensor 1 has %d (%s vs %s)",
          i, #t.shape, n, util.shape_str(t.shape), util.shape_str(first)))
      end
      for j = 1, n do
        if j ~= d and t.shape[j] ~= first[j] then
          err(node, string.format("cat: sizes must match except in dim %d, but tensor %d is %s and tensor 1 is %s",
            d - 1, i, util.shape_str(t.shape), util.shape_str(first)))
        end
      end
      if t.shape[d] == "B" then
        err(node, "cat: cannot concatenate along the batch dimension")
      end
      out[d] = out[d] + t.shape[d]
    end
    return out
  end,
  flops = function() return 0 end,
}
-- cat's memory layout, for the backends: along output dim `d` (1-based) each input is
-- OUTER blocks of (its size along d × INNER) elements; returns d, INNER
function ops.cat.layout(node)
  local d = node.attrs.dim
  local shape = node.out.shape
  if d < 0 then d = d + #shape end
  return d + 1, inner_count(shape, d + 2)
end

-- a change of format, inserted by the precision pass (gen/precision.lua), never by a spec
ops.cast = {
  arity = 1, precision = "follow",
  shape = function(_, x) return copy(x.shape) end,
  flops = function() return 0 end,
}

-- x:detach(): the same storage, cut from the graph (no gradient flows into x through it)
ops.detach = {
  arity = 1, precision = "follow", no_grad_inputs = { [1] = true },
  shape = function(_, x) return copy(x.shape), x.dtype end,
  flops = function() return 0 end,
}

ops.flatten = {
  arity = 1, precision = "follow",
  shape = function(node, x)
    local n = #x.shape
    if n == 0 then return { 1 } end
    local s = norm_dim(node, node.attrs.start_dim, n)
    local e = norm_dim(node, node.attrs.end_dim, n)
    if s > e then
      err(node, string.format("%s: start_dim %d comes after end_dim %d", label(node), node.attrs.start_dim, node.attrs.end_dim))
    end
    local out, prod, parts, has_b = {}, 1, {}, false
    for i = 1, s - 1 do out[i] = x.shape[i] end
    for i = s, e do
      if x.shape[i] == "B" then has_b = true else prod = prod * x.shape[i] end
      parts[#parts + 1] = tostring(x.shape[i])
    end
    if has_b and e > s then
      err(node, string.format("%s: flattening the batch dimension together with others is not supported (dims %d..%d of %s)",
        label(node), s - 1, e - 1, util.shape_str(x.shape)))
    end
    out[s] = has_b and "B" or prod
    for i = e + 1, n do out[#out + 1] = x.shape[i] end
    local factors
    if e > s then factors = { [s] = table.concat(parts, "×") } end
    return out, x.dtype, { factors = factors }
  end,
  flops = function() return 0 end,
}

-- dims: integers, at most one -1 (inferred) and at most one "B" (the batch
-- kept where x:size(0) put it, as in x.view(x.size(0), -1)).  Without a "B", a
-- batched input's -1 must absorb exactly the batch.
ops.reshape = {
  arity = 1, precision = "follow",
  shape = function(node, x)
    local dims = node.attrs.dims
    local name = node.attrs.as or "reshape"
    local per_sample = 1   -- product of the input's non-batch dims
    local batched = false
    for _, d in ipairs(x.shape) do if d == "B" then batched = true else per_sample = per_sample * d end end
    local out, known, infer, keeps_batch = {}, 1, nil, false
    for i, d in ipairs(dims) do
      if d == "B" then
        if keeps_batch then err(node, name .. ": the batch size can appear only once in the new shape") end
        if not batched then
          err(node, string.format("%s: the batch size is given for an input without a batch dimension %s",
            name, util.shape_str(x.shape)))
        end
        keeps_batch = true
      elseif d == -1 then
        if infer then err(node, name .. ": only one dimension can be -1") end
        infer = i
      elseif d < 0 then
        err(node, string.format("%s: invalid size %d", name, d))
      else
        known = known * d
      end
      out[i] = d
    end
    local function bad()
      err(node, string.format("%s: shape %s is invalid for an input of shape %s",
        name, util.shape_str(dims), util.shape_str(x.shape)))
    end
    if batched and not keeps_batch then
      -- -1 must absorb the batch: the remaining dims must hold exactly one sample
      if not infer or known ~= per_sample then
        if infer and known ~= 0 and (per_sample % known == 0) and known ~= per_sample then
          err(node, string.format("%s: shape %s would mix the batch dimension into others (input %s); keep one dim as -1 for the batch",
            name, util.shape_str(dims), util.shape_str(x.shape)))
        end
        bad()
      end
      out[infer] = "B"
    else
      if infer then
        if known == 0 or per_sample % known ~= 0 then bad() end
        out[infer] = per_sample // known
      elseif known ~= per_sample then bad() end
    end
    return out, x.dtype
  end,
  flops = function() return 0 end,
}

ops.transpose = {
  arity = 1, precision = "follow",
  shape = function(node, x)
    local n = #x.shape
    local a = norm_dim(node, node.attrs.dim0, n)
    local b = norm_dim(node, node.attrs.dim1, n)
    local out = copy(x.shape)
    out[a], out[b] = out[b], out[a]
    return out, x.dtype
  end,
  flops = function() return 0 end,
}

-- the permutation a transpose is (0-based dims, as torch's permute takes them)
function ops.transpose.perm(n)
  local k = #n.inputs[1].shape
  local perm = {}
  for i = 1, k do perm[i] = i - 1 end
  local a, b = n.attrs.dim0 % k, n.attrs.dim1 % k
  perm[a + 1], perm[b + 1] = b, a
  return perm
end

ops.permute = {
  arity = 1, precision = "follow",
  shape = function(node, x)
    local n = #x.shape
    local dims = node.attrs.dims
    if #dims ~= n then
      err(node, string.format("permute: %d dims given for a %d-d tensor %s", #dims, n, util.shape_str(x.shape)))
    end
    local out, seen = {}, {}
    for i, d in ipairs(dims) do
      local j = norm_dim(node, d, n)
      if seen[j] then err(node, string.format("permute: dim %d repeated", j - 1)) end
      seen[j] = true
      out[i] = x.shape[j]
    end
    return out, x.dtype
  end,
  flops = function() return 0 end,
}
function ops.permute.perm(n)
  local k = #n.inputs[1].shape
  local perm = {}
  for i, d in ipairs(n.attrs.dims) do perm[i] = d % k end
  return perm
end

ops.slice = {
  arity = 1, precision = "follow",
  shape = function(node, x)
    local a = node.attrs
    local n = #x.shape
    local d = norm_dim(node, a.dim, n)
    local size = x.shape[d]
    if size == "B" then err(node, (a.length and "narrow" or "slice") .. ": slicing the batch dimension is not supported") end
    if a.step <= 0 then err(node, "slice: step must be positive") end
    local function clamp(v, default)
      if v == nil then return default end
      if v < 0 then v = v + size end
      return math.max(0, math.min(size, v))
    end
    local start, stop
    if a.length then
      -- narrow(x, dim, start, length): no clamping, as torch.narrow
      start = a.start < 0 and a.start + size or a.start
      if start < 0 or start > size then
        err(node, string.format("narrow: start %d is out of range for dim %d of size %d (expected in [%d, %d])",
          a.start, a.dim, size, -size, size))
      end
      if a.length < 0 then err(node, string.format("narrow: length %d must be non-negative", a.length)) end
      if start + a.length > size then
        err(node, string.format("narrow: start (%d) + length (%d) exceeds the size %d of dim %d",
          start, a.length, size, a.dim))
      end
      stop = start + a.length
    else
      start, stop = clamp(a.start, 0), clamp(a.stop, size)
    end
    local len = stop > start and (stop - start + a.step - 1) // a.step or 0
    if len == 0 then
      err(node, string.format("slice: [%s:%s] of dim %d (size %d) is empty",
        tostring(a.start or ""), tostring(a.stop or ""), a.dim, size))
    end
    local out = copy(x.shape); out[d] = len
    a.start_index = start
    return out, x.dtype
  end,
  flops = function() return 0 end,
}

local function reduce_shape(node, x)
  expect_float(node, x)
  local n = #x.shape
  local dims = node.attrs.dims
  local drop = {}
  if dims == nil then                      -- over everything (PyTorch: dim=None, or dim=[])
    for i = 1, n do drop[i] = true end
  end
  for _, d in ipairs(dims or {}) do
    local i = norm_dim(node, d, n)
    if drop[i] then err(node, string.format("%s: dim %d appears multiple times in the list of dims", node.op, i - 1)) end
    drop[i] = true
  end
  local out = {}
  for i = 1, n do
    if drop[i] then
      if node.attrs.keepdim then out[#out + 1] = 1 end
    else
      out[#out + 1] = x.shape[i]
    end
  end
  return out
end
ops.sum = { arity = 1, precision = "fp32", shape = reduce_shape, flops = function(n) return numel(n.inputs[1].shape) end }
ops.mean = { arity = 1, precision = "fp32", shape = reduce_shape, flops = function(n) return numel(n.inputs[1].shape) end }

-- sum/mean's memory layout, for the backends: the reduced dims must be one adjacent run,
-- seen as (OUTER, D, INNER).  Returns nil when reducing over everything, else the
-- 1-based first dim of the run (OUTER is the product of the dims before it), D and INNER.
function ops.sum.layout(node)
  local x = node.inputs[1]
  local k = #x.shape
  if not node.attrs.dims then return nil end
  local ds = {}
  for _, d in ipairs(node.attrs.dims) do ds[#ds + 1] = (d < 0 and d + k or d) + 1 end
  table.sort(ds)
  for i = 2, #ds do
    if ds[i] ~= ds[i - 1] + 1 then
      require("diag").fatal(node.where, string.format("%s over non-adjacent dims is not supported yet", node.op))
    end
  end
  local first, last = ds[1], ds[#ds]
  local D = 1
  for i = first, last do
    if x.shape[i] == "B" then require("diag").fatal(node.where, node.op .. " over the batch dimension inside the model is not supported yet") end
    D = D * x.shape[i]
  end
  return first, D, inner_count(x.shape, last + 1)
end
ops.mean.layout = ops.sum.layout

-- torch.matmul: 1-d, 2-d and batched (broadcast) operands.
ops.matmul = {
  arity = 2, precision = "lowp",
  shape = function(node, a, b)
    expect_float(node, a, "operand"); expect_float(node, b, "operand")
    local sa, sb = copy(a.shape), copy(b.shape)
    if #sa == 0 or #sb == 0 then err(node, "matmul: both arguments need at least 1 dimension") end
    local squeeze_a, squeeze_b = #sa == 1, #sb == 1
    if squeeze_a then table.insert(sa, 1, 1) end
    if squeeze_b then sb[#sb + 1] = 1 end
    local m, k = sa[#sa - 1], sa[#sa]
    local k2, nn = sb[#sb - 1], sb[#sb]
    if k ~= k2 then
      err(node, string.format("matmul: shapes %s and %s cannot be multiplied (%s ≠ %s)",
        util.shape_str(a.shape), util.shape_str(b.shape), tostring(k), tostring(k2)))
    end
    local ba, bb = {}, {}
    for i = 1, #sa - 2 do ba[i] = sa[i] end
    for i = 1, #sb - 2 do bb[i] = sb[i] end
    local out = broadcast(node, ba, bb)
    if not squeeze_a then out[#out + 1] = m end
    if not squeeze_b then out[#out + 1] = nn end
    return out
  end,
  flops = function(node)
    local a = node.inputs[1].shape
    local k = a[#a]
    return 2 * k * numel(node.out.shape)
  end,
}

-- matmul's memory layout, for the backends (the CPU's k_matmul_dims): the output's
-- batch dims `bshape` (up to 4; "B" only first), each operand's matrix stride per batch
-- dim (`sa`, `sb`, in matrices; 0 where it is broadcast) and the matrices' M, K, N
-- (a 1-d operand is a 1-row or 1-column matrix).
function ops.matmul.layout(node)
  local a, b = node.inputs[1].shape, node.inputs[2].shape
  local am = #a == 1 and { 1, a[1] } or a
  local bm = #b == 1 and { b[1], 1 } or b
  local M, K, N = am[#am - 1], am[#am], bm[#bm]
  local nb = math.max(#am, #bm) - 2
  if nb > 4 then require("diag").fatal(node.where, "matmul with more than 4 batch dims is not supported yet") end
  local bshape = {}
  for i = 1, nb do
    local da, db = am[#am - 2 - nb + i], bm[#bm - 2 - nb + i]
    bshape[i] = (da ~= nil and da ~= 1) and da or (db or 1)
    if i > 1 and bshape[i] == "B" then
      require("diag").fatal(node.where, string.format("matmul: the batch dimension as batch dim %d of %s is not supported yet "
        .. "(the first batch dim, or a matrix dim, is)", i - 1, util.shape_str(node.out.shape)))
    end
  end
  local function strides(m)
    local s, run = {}, 1
    local k = #m - 2
    for i = nb, 1, -1 do
      local d = m[k - nb + i]
      if d == nil or (d == 1 and bshape[i] ~= 1) then s[i] = 0 else s[i] = run; run = run * (d == "B" and 1 or d) end
    end
    return s
  end
  return { nb = nb, bshape = bshape, sa = strides(am), sb = strides(bm), M = M, K = K, N = N }
end

-- q (..., L, E), k (..., S, E), v (..., S, Ev) -> (..., L, Ev)
ops.scaled_dot_product_attention = {
  arity = 3, precision = "lowp",
  shape = function(node, q, k, v)
    for i, t in ipairs { q, k, v } do expect_float(node, t, ({ "query", "key", "value" })[i]) end
    local sq, sk, sv = q.shape, k.shape, v.shape
    local n = #sq
    if n < 2 or #sk ~= n or #sv ~= n then
      err(node, string.format("scaled_dot_product_attention: query, key and value need the same number (≥ 2) of dims, got %s, %s, %s",
        util.shape_str(sq), util.shape_str(sk), util.shape_str(sv)))
    end
    for i = 1, n - 2 do
      if sq[i] ~= sk[i] or sq[i] ~= sv[i] then
        err(node, string.format("scaled_dot_product_attention: batch dims differ: %s, %s, %s",
          util.shape_str(sq), util.shape_str(sk), util.shape_str(sv)))
      end
    end
    if sq[n] ~= sk[n] then
      err(node, string.format("scaled_dot_product_attention: query and key feature sizes differ (%s vs %s)", tostring(sq[n]), tostring(sk[n])))
    end
    if sk[n - 1] ~= sv[n - 1] then
      err(node, string.format("scaled_dot_product_attention: key and value lengths differ (%s vs %s)", tostring(sk[n - 1]), tostring(sv[n - 1])))
    end
    local out = copy(sq); out[n] = sv[n]
    return out
  end,
  flops = function(node)
    local q, k, v = node.inputs[1].shape, node.inputs[2].shape, node.inputs[3].shape
    local n = #q
    local batch = numel(q) // (q[n - 1] * q[n])
    local L, S, E, Ev = q[n - 1], k[n - 1], q[n], v[n]
    return batch * (2 * L * S * E + 5 * L * S + 2 * L * S * Ev)
  end,
}

---------------------------------------------------------------------------
-- Losses (fp32, as autocast keeps them)

local function reduced(node, shape)
  if node.attrs.reduction == "none" then return copy(shape) end
  return {}
end

-- a loss's per-class weight (its third input, PyTorch's `weight`): C floats, no gradient
local function class_weight(node, name, input, weight)
  if not weight then return end
  local si, sw = input.shape, weight.shape
  local C = #si == 1 and si[1] or si[2]
  if weight.dtype ~= "float" or #sw ~= 1 or sw[1] ~= C then
    err(node, string.format("%s: weight must be a float tensor of one value per class, shape %s, gets %s %s",
      name, util.shape_str({ C }), weight.dtype, util.shape_str(sw)))
  end
end

ops.cross_entropy = {
  precision = "fp32", no_grad_inputs = { [3] = true }, refused_grad = { [3] = "a class weight" },
  shape = function(node, input, target, weight)
    expect_float(node, input, "input (logits)")
    local si, st = input.shape, target.shape
    if #si < 1 then err(node, "cross_entropy: input must have a class dimension") end
    class_weight(node, "cross_entropy", input, weight)
    if target.dtype == "int64" then
      -- class indices: input (N, C, d1...) and target (N, d1...), or input (C) and target ()
      local expect = {}
      for i, d in ipairs(si) do if i ~= 2 then expect[#expect + 1] = d end end
      if #si == 1 then expect = {} end
      local ok = #st == #expect
      for i = 1, #expect do if ok and st[i] ~= expect[i] then ok = false end end
      if not ok then
        err(node, string.format("cross_entropy: class-index target must have shape %s for input %s, gets %s",
          util.shape_str(expect), util.shape_str(si), util.shape_str(st)))
      end
      return reduced(node, st)
    end
    -- class probabilities: same shape as the input
    local ok = #st == #si
    for i = 1, #si do if ok and st[i] ~= si[i] then ok = false end end
    if not ok then
      err(node, string.format("cross_entropy: probability target must have the input's shape %s, gets %s (for class indices use a Tensor with dtype = 'int64')",
        util.shape_str(si), util.shape_str(st)))
    end
    local out = {}
    for i, d in ipairs(si) do if i ~= 2 then out[#out + 1] = d end end
    return reduced(node, out)
  end,
  flops = function(node) return 6 * numel(node.inputs[1].shape) end,
}

local function pointwise_loss(name)
  return {
    arity = 2, precision = "fp32",
    shape = function(node, input, target)
      expect_float(node, input, "input")
      if target.dtype ~= "float" then
        err(node, string.format("%s expects a floating-point target, gets %s", name, target.dtype))
      end
      local si, st = input.shape, target.shape
      local ok = #si == #st
      for i = 1, #si do if ok and si[i] ~= st[i] then ok = false end end
      if not ok then
        err(node, string.format("%s: target shape %s must equal input shape %s",
          name, util.shape_str(st), util.shape_str(si)))
      end
      return reduced(node, si)
    end,
    flops = function(node) return 4 * numel(node.inputs[1].shape) end,
  }
end
ops.bce = pointwise_loss("bce")
ops.bce_with_logits = pointwise_loss("bce_with_logits")
ops.mse = pointwise_loss("mse")
ops.l1 = pointwise_loss("l1")


---------------------------------------------------------------------------
-- Elementwise functions with constants (issue 18).  Each is one scalar function and
-- its derivative (templates/cpu/kernels_pointwise.inc: K_UNARY), taking two constants
-- `a`, `b` that `consts(node)` gives; `backward_reads_output` says whether the
-- derivative is written in terms of the output (else the input).
local UNARY = {
  leaky_relu = function(a) return a.negative_slope, 0 end,
  elu = function(a) return a.alpha, 0 end,
  mish = false, hardswish = false,
  softplus = function(a) return a.beta, a.threshold end,
  hardtanh = function(a) return a.min_val, a.max_val end,
  exp = false, log = false, sqrt = false, rsqrt = false, abs = false,
  pow = function(a) return a.exponent, 0 end,
  clamp = function(a) return a.min or -math.huge, a.max or math.huge end,
}
local READS_OUTPUT = { exp = true, sqrt = true, rsqrt = true }
for name, consts in pairs(UNARY) do
  ops[name] = { arity = 1, precision = "follow", shape = same_shape, flops = elementwise_flops,
                backward_reads_output = READS_OUTPUT[name] or false,
                consts = consts or function() return 0, 0 end }
end
-- exp/log/pow/sqrt/rsqrt: autocast runs them in fp32
for _, name in ipairs { "exp", "log", "pow", "sqrt", "rsqrt" } do ops[name].precision = "fp32" end

-- torch.maximum / torch.minimum (tensors, broadcast); an exact tie sends half the
-- gradient to each operand, as PyTorch does
ops.maximum = { arity = 2, precision = "follow", shape = binary_shape, flops = elementwise_flops }
ops.minimum = { arity = 2, precision = "follow", shape = binary_shape, flops = elementwise_flops }
-- pow(tensor, tensor)
ops.pow_tensor = { arity = 2, precision = "fp32", shape = binary_shape, flops = elementwise_flops }

-- Reductions over one dim or a run of dims, with the sum's layout (OUTER, D, INNER):
-- amax (PyTorch splits the gradient evenly among ties), var / std (correction),
-- max over a dim (the gradient goes to the index of the first maximum, saved).
ops.amax = { arity = 1, precision = "follow", shape = reduce_shape, flops = function(n) return numel(n.inputs[1].shape) end,
             backward_reads_output = true }
ops.var = { arity = 1, precision = "fp32", shape = reduce_shape, flops = function(n) return 3 * numel(n.inputs[1].shape) end }
ops.std = { arity = 1, precision = "fp32", shape = reduce_shape, flops = function(n) return 3 * numel(n.inputs[1].shape) end,
            backward_reads_output = true }
ops.max_dim = { arity = 1, precision = "follow", shape = reduce_shape, flops = function(n) return numel(n.inputs[1].shape) end }
ops.amax.layout, ops.var.layout, ops.std.layout, ops.max_dim.layout = ops.sum.layout, ops.sum.layout, ops.sum.layout, ops.sum.layout

-- cosine_similarity(x1, x2, dim, eps): sum(x1 x2) / sqrt(max(sum(x1²) sum(x2²), eps²))
ops.cosine_similarity = {
  arity = 2, precision = "fp32",
  shape = function(node, a, b)
    expect_float(node, a, "x1"); expect_float(node, b, "x2")
    if #a.shape ~= #b.shape then
      err(node, string.format("cosine_similarity: x1 %s and x2 %s must have the same shape", util.shape_str(a.shape), util.shape_str(b.shape)))
    end
    for i = 1, #a.shape do
      if a.shape[i] ~= b.shape[i] then
        err(node, string.format("cosine_similarity: x1 %s and x2 %s must have the same shape (broadcasting is not supported yet)",
          util.shape_str(a.shape), util.shape_str(b.shape)))
      end
    end
    local d = norm_dim(node, node.attrs.dim, #a.shape)
    if a.shape[d] == "B" then err(node, "cosine_similarity: dim is the batch dimension") end
    local out = {}
    for i = 1, #a.shape do if i ~= d then out[#out + 1] = a.shape[i] end end
    return out
  end,
  flops = function(n) return 6 * numel(n.inputs[1].shape) end,
}
function ops.cosine_similarity.layout(n)
  local x = n.inputs[1]
  local d = n.attrs.dim
  if d < 0 then d = d + #x.shape end
  local inner = 1
  for i = d + 2, #x.shape do inner = inner * x.shape[i] end
  return d + 1, x.shape[d + 1], inner
end

-- Normalisations over a sample's channel groups (GroupNorm, InstanceNorm: groups =
-- channels) and root-mean-square normalisation over the last dims (RMSNorm)
ops.group_norm = {
  arity = 3, precision = "fp32",
  shape = function(node, x)
    expect_float(node, x)
    local a = node.attrs
    if #x.shape < 3 then
      err(node, string.format("%s expects an input (N, C, ...) with at least 3 dims, gets %dD %s", label(node), #x.shape, util.shape_str(x.shape)))
    end
    if a.ndim and #x.shape ~= a.ndim then
      err(node, string.format("%s expects a %dD input, gets %dD %s", label(node), a.ndim, #x.shape, util.shape_str(x.shape)))
    end
    if x.shape[2] ~= a.num_channels then
      err(node, string.format("%s expects %d channels (dim 1), gets %s (input %s)", label(node), a.num_channels,
        tostring(x.shape[2]), util.shape_str(x.shape)))
    end
    return copy(x.shape)
  end,
  flops = function(node) return 5 * numel(node.out.shape) end,
}
ops.rms_norm = {
  arity = 2, precision = "fp32",
  shape = ops.layer_norm.shape,
  flops = function(node) return 4 * numel(node.out.shape) end,
}

-- 1-d convolution: Conv2d's kernels on a height of 1
ops.conv1d = {
  arity = 3, precision = "lowp",
  shape = function(node, x, w)
    expect_float(node, x)
    if #x.shape ~= 3 then
      err(node, string.format("%s expects a 3-d input (batch, channels, length), gets %d-d %s",
        label(node), #x.shape, util.shape_str(x.shape)))
    end
    local a = node.attrs
    local cin = w.shape[2] * a.groups
    if x.shape[2] ~= cin then
      err(node, string.format("%s expects %d input channels, gets %d (input %s)", label(node), cin, x.shape[2], util.shape_str(x.shape)))
    end
    local k, s, d = a.kernel_size[1], a.stride[1], a.dilation[1]
    local p_total = a.padding_lo and (a.padding_lo[1] + a.padding_hi[1]) or 2 * a.padding[1]
    local o = (x.shape[3] + p_total - d * (k - 1) - 1) // s + 1
    if o < 1 then
      err(node, string.format("%s: input %s is too small for kernel size %d%s (output would be %d)",
        label(node), util.shape_str(x.shape), k, d > 1 and (" with dilation " .. d) or "", o))
    end
    return { x.shape[1], w.shape[1], o }
  end,
  flops = function(node)
    local w = node.inputs[2].shape
    local o = node.out.shape
    return o[2] * o[3] * (2 * w[2] * w[3] + (node.inputs[3] and 1 or 0))
  end,
}

local function spatial_any(node, x, nd)
  expect_float(node, x)
  if #x.shape ~= nd + 2 then
    err(node, string.format("%s expects a %d-d input (batch, channels, %s), gets %d-d %s", label(node), nd + 2,
      nd == 1 and "length" or "height, width", #x.shape, util.shape_str(x.shape)))
  end
end

-- transposed convolution (ConvTranspose1d/2d) on (N, C, L) or (N, C, H, W): weight
-- (in, out/groups, k...); out = (in - 1) stride - 2 padding + dilation (k - 1) + output_padding + 1
ops.conv_transpose = {
  arity = 3, precision = "lowp",
  shape = function(node, x, w)
    local a = node.attrs
    local nd = #a.kernel_size
    spatial_any(node, x, nd)
    if x.shape[2] ~= w.shape[1] then
      err(node, string.format("%s expects %d input channels, gets %d (input %s)", label(node), w.shape[1], x.shape[2], util.shape_str(x.shape)))
    end
    local out = { x.shape[1], w.shape[2] * a.groups }
    for i = 1, nd do
      local o = (x.shape[2 + i] - 1) * a.stride[i] - 2 * a.padding[i] + a.dilation[i] * (a.kernel_size[i] - 1) + a.output_padding[i] + 1
      if o < 1 then
        err(node, string.format("%s: input %s gives an output size of %d", label(node), util.shape_str(x.shape), o))
      end
      out[2 + i] = o
    end
    return out
  end,
  flops = function(node)
    local w = node.inputs[2].shape
    local per = 2 * w[2]
    for i = 3, #w do per = per * w[i] end
    return numel(node.inputs[1].shape) * per
  end,
}

-- adaptive average pooling (PyTorch's windows: [floor(i In / Out), ceil((i+1) In / Out)))
-- and upsampling (nearest, linear/bilinear), on (N, C, L) or (N, C, H, W)
ops.adaptive_avg_pool = {
  arity = 1, precision = "follow",
  shape = function(node, x)
    local a = node.attrs
    spatial_any(node, x, #a.output_size)
    local out = { x.shape[1], x.shape[2] }
    for i, o in ipairs(a.output_size) do out[2 + i] = o == false and x.shape[2 + i] or o end
    return out
  end,
  flops = function(node) return numel(node.inputs[1].shape) end,
}
ops.upsample = {
  arity = 1, precision = "follow",
  shape = function(node, x)
    local a = node.attrs
    local nd = #x.shape - 2
    if nd ~= 1 and nd ~= 2 then
      err(node, string.format("%s expects a 3-d (N, C, L) or 4-d (N, C, H, W) input, gets %d-d %s", label(node), #x.shape, util.shape_str(x.shape)))
    end
    if a.mode == "bilinear" and nd ~= 2 then err(node, string.format("%s: mode 'bilinear' expects a 4-d input, gets %s", label(node), util.shape_str(x.shape))) end
    if a.mode == "linear" and nd ~= 1 then err(node, string.format("%s: mode 'linear' expects a 3-d input, gets %s", label(node), util.shape_str(x.shape))) end
    local n = a.size or a.scale_factor
    if #n ~= 1 and #n ~= nd then
      err(node, string.format("%s: %d sizes or scale factors given for %d spatial dims", label(node), #n, nd))
    end
    local out = { x.shape[1], x.shape[2] }
    a.scales = {}
    for i = 1, nd do
      local size = x.shape[2 + i]
      local o
      if a.size then o = a.size[i] or a.size[1]
      else o = math.floor(size * (a.scale_factor[i] or a.scale_factor[1])) end
      if o < 1 then err(node, string.format("%s: output size %d of dim %d is too small", label(node), o, i + 1)) end
      out[2 + i] = o
      -- PyTorch's area_pixel_compute_scale: input index per output index
      if a.align_corners then a.scales[i] = o > 1 and (size - 1) / (o - 1) or 0
      elseif a.scale_factor then a.scales[i] = 1 / (a.scale_factor[i] or a.scale_factor[1])
      else a.scales[i] = size / o end
    end
    return out
  end,
  flops = function(node) return 4 * numel(node.out.shape) end,
}

-- where(cond, a, b) and masked_fill(x, mask, value): the condition is an integer tensor
-- (nonzero = true; loom has no bool dtype: a data field with dtype = 'int64', or a
-- comparison's result); a and b tensors or numbers (attrs a, b), all three broadcast
-- together as torch.where does; masked_fill's mask broadcasts to x's shape, which it
-- keeps (as Tensor.masked_fill).  The inputs are the condition and the tensors among a,
-- b in order.
ops.where = {
  precision = "follow", no_grad_inputs = { [1] = true },
  shape = function(node, cond, x, y)
    local what = node.attrs.as or "where"
    if cond.dtype ~= "int64" then
      err(node, string.format("%s: the condition must be an integer tensor (dtype = 'int64', nonzero = true), gets %s",
        what, cond.dtype))
    end
    expect_float(node, x, "operand")
    if y then expect_float(node, y, "operand") end
    local out = broadcast(node, cond.shape, x.shape)
    if y then out = broadcast(node, out, y.shape) end
    if what == "masked_fill" and util.shape_str(out) ~= util.shape_str(x.shape) then
      err(node, string.format("masked_fill: the mask %s would broadcast the tensor %s (it must broadcast to the tensor's shape)",
        util.shape_str(cond.shape), util.shape_str(x.shape)))
    end
    return out
  end,
  flops = elementwise_flops,
}

-- argmax over one dim (the first index of the maximum; NaN counts as the maximum, as
-- PyTorch's) and the comparisons gt lt ge le eq ne (two float or integer tensors,
-- broadcast together, an integer one compared as a float with a float one as PyTorch
-- promotes it; or a tensor and a number, attrs.scalar): integer (int64) outputs, 0/1 for the comparisons (PyTorch's
-- bool: loom has no bool dtype; where, masked_fill and key_padding_mask read them), no
-- gradient.  The precision plan stores them as i64 whatever the precision.
ops.argmax = { arity = 1, precision = "follow", no_grad = true, flops = function(n) return numel(n.inputs[1].shape) end,
  shape = function(node, x) return reduce_shape(node, x), "int64" end }
ops.argmax.layout = ops.sum.layout
ops.compare = { precision = "follow", no_grad = true, flops = elementwise_flops,
  shape = function(node, a, b)
    if b then return broadcast(node, a.shape, b.shape), "int64" end
    return copy(a.shape), "int64"
  end }

-- tensor(values): a constant the spec computes in Lua (rotary position tables), as
-- torch.tensor(values): no inputs, no gradient, no batch dimension; not a parameter or
-- buffer (not in the state_dict).  `attrs.values` holds the elements in row-major order.
ops.constant = {
  arity = 0, precision = "fp32", no_grad = true,
  shape = function(node) return copy(node.attrs.shape), "float" end,
  flops = function() return 0 end,
}

-- randn / rand (shape) and randn_like / rand_like (x): N(0, 1) or U[0, 1) draws from the
-- program's counter-based RNG (runtime/philox.h), as torch.randn / torch.rand: element i
-- of the op at step s is drawn from Philox(seed, s << 20 | the op's index, i), the stream
-- dropout uses, so the draws are a function of the checkpoint's seed and step (a resumed
-- run draws what the uninterrupted one did).  No gradient; a _like op reads only its
-- input's shape (`attrs.dist`: "normal" or "uniform"; `attrs.shape` without an input, its
-- first size may be the batch, x:size(0)).
ops.random = {
  precision = "follow", no_grad = true, no_grad_inputs = { [1] = true },
  shape = function(node, like)
    if like then
      expect_float(node, like, "input (its shape and dtype)")
      return copy(like.shape), "float"
    end
    for i, d in ipairs(node.attrs.shape) do
      if d == "B" and i ~= 1 then
        err(node, string.format("%s: the batch size (x:size(0)) can only be the first size, got %s", node.attrs.as,
          util.shape_str(node.attrs.shape)))
      elseif d ~= "B" and (math.type(d) ~= "integer" or d <= 0) then
        err(node, string.format("%s: sizes must be positive integers or the batch size (x:size(0)), got %s", node.attrs.as, tostring(d)))
      end
    end
    return copy(node.attrs.shape), "float"
  end,
  flops = function() return 0 end,
}

-- expand(x, sizes) and tile(x, sizes), as Tensor.expand / Tensor.repeat (torch.tile): the output's
-- element at (i0, i1, ...) is x's at (i0 mod x.size(0), ...), x's dims aligned with the
-- last sizes (new leading dims have size 1 in x).  expand broadcasts dims of size 1 (-1
-- keeps a dim); tile repeats every dim that many times.  The backward sums the output's
-- gradient over the copies.  A size may be the batch size (x:size(0)) where x's dim is 1.
ops.tile = {
  arity = 1, precision = "follow",
  shape = function(node, x)
    expect_float(node, x)
    local a, sizes = node.attrs, node.attrs.sizes
    local n, k = #sizes, #sizes - #x.shape
    local what = a.as .. util.shape_str(sizes)   -- expand(B, -1, -1), as written
    if k < 0 then
      err(node, string.format("%s: the number of sizes (%d) must be at least the tensor's dims (%d-d %s)", a.as, n, #x.shape,
        util.shape_str(x.shape)))
    end
    local out = {}
    for i = 1, n do
      local s, d = sizes[i], x.shape[i - k]
      if s ~= "B" and math.type(s) ~= "integer" then
        err(node, string.format("%s: sizes must be integers or the batch size (x:size(0)), got %s", a.as, tostring(s)))
      end
      if a.as == "expand" then
        if s == -1 then
          if d == nil then err(node, string.format("%s: -1 is not allowed for a new leading dim (dim %d)", what, i - 1)) end
          out[i] = d
        elseif d == nil or d == 1 or d == s then out[i] = s
        else
          err(node, string.format("%s: the expanded size (%s) must match the existing size (%s) at dim %d, or that size must be 1",
            what, tostring(s), tostring(d), i - 1))
        end
      else
        if s == "B" then
          if d ~= nil and d ~= 1 then
            err(node, string.format("%s: repeating dim %d of size %s by the batch size: only a dim of size 1 can be", what, i - 1, tostring(d)))
          end
          out[i] = "B"
        elseif s <= 0 then err(node, string.format("%s: repeats must be positive, got %d at dim %d", what, s, i - 1))
        elseif d == "B" then
          if s ~= 1 then err(node, string.format("%s: the batch dim can only be repeated once", what)) end
          out[i] = "B"
        else out[i] = (d or 1) * s end
      end
      if out[i] == "B" and i ~= 1 then
        err(node, string.format("%s: the batch size can only be the first dim of the result", what))
      end
    end
    return out
  end,
  flops = elementwise_flops,
}

-- Dropout2d: whole channels zeroed (one draw per (sample, channel))
ops.dropout2d = { arity = 1, precision = "follow", flops = elementwise_flops,
  shape = function(node, x)
    expect_float(node, x)
    if #x.shape ~= 3 and #x.shape ~= 4 then
      err(node, string.format("%s expects a 3-d or 4-d input (N, C, ...), gets %d-d %s", label(node), #x.shape, util.shape_str(x.shape)))
    end
    return copy(x.shape)
  end }

-- More losses: smooth_l1 (beta), huber (delta), kl_div (log-probabilities against
-- probabilities, or log-probabilities with log_target), nll_loss (log-probabilities and
-- class indices).  mse, l1, smooth_l1 and huber are symmetric in input and target: a
-- target that needs a gradient gets the input's rule with the two swapped.
ops.smooth_l1 = pointwise_loss("smooth_l1")
ops.huber = pointwise_loss("huber")
ops.kl_div = pointwise_loss("kl_div")
for _, name in ipairs { "mse", "l1", "smooth_l1", "huber" } do ops[name].symmetric = true end
ops.kl_div.target_grad = true
-- losses whose target may not need a gradient here: said at autodiff, one line
for _, name in ipairs { "bce", "bce_with_logits", "cross_entropy" } do ops[name].no_target_grad = true end
ops.nll_loss = {
  precision = "fp32", no_grad_inputs = { [2] = true, [3] = true }, refused_grad = { [3] = "a class weight" },
  shape = function(node, input, target, weight)
    expect_float(node, input, "input (log-probabilities)")
    local si, st = input.shape, target.shape
    if target.dtype ~= "int64" then
      err(node, string.format("nll_loss expects class indices (a Tensor with dtype = 'int64') as target, gets %s", target.dtype))
    end
    if #si < 2 then err(node, string.format("nll_loss: input must be (N, C, ...), gets %s", util.shape_str(si))) end
    class_weight(node, "nll_loss", input, weight)
    local expect = {}
    for i, d in ipairs(si) do if i ~= 2 then expect[#expect + 1] = d end end
    local ok = #st == #expect
    for i = 1, #expect do if ok and st[i] ~= expect[i] then ok = false end end
    if not ok then
      err(node, string.format("nll_loss: target must have shape %s for input %s, gets %s",
        util.shape_str(expect), util.shape_str(si), util.shape_str(st)))
    end
    return reduced(node, st)
  end,
  flops = function(node) return numel(node.inputs[2].shape) end,
}

-- accuracy(input, target): the fraction of samples scored right, a metric (train.log)
-- with no gradient.  Class indices (int64, (N)) against input (N, C): argmax over dim 1
-- equals the target, as (input.argmax(1) == target).float().mean(); a float target of
-- the input's shape: (input > threshold) equals (target > 0.5), elementwise.
ops.accuracy = {
  arity = 2, precision = "fp32", no_grad = true, no_grad_inputs = { [1] = true, [2] = true },
  shape = function(node, input, target)
    expect_float(node, input, "input")
    local si, st = input.shape, target.shape
    if target.dtype == "int64" then
      if #si ~= 2 or #st ~= 1 or st[1] ~= si[1] then
        err(node, string.format("accuracy: class indices need input (N, C) and target (N), gets %s and %s",
          util.shape_str(si), util.shape_str(st)))
      end
    else
      local ok = #si == #st
      for i = 1, #si do if ok and si[i] ~= st[i] then ok = false end end
      if not ok then
        err(node, string.format("accuracy: a float target must have the input's shape %s, gets %s (class indices: dtype = 'int64')",
          util.shape_str(si), util.shape_str(st)))
      end
    end
    return {}
  end,
  flops = function(node) return numel(node.inputs[1].shape) end,
}

-- What an op keeps from its forward for its backward (gen/plan.lua lays it out; both
-- backends' kernels read it): a list of { name, per_sample = n (times the batch) or
-- count = n, dtype = "int32" for indices (else the compute type) }.
local function dims_after(shape, first)  -- product of shape[first..]; a sample's, where B is elsewhere
  local n, skip = 1, false
  for i = 1, #shape do if shape[i] == "B" and i >= first then skip = true end end
  for i = skip and 1 or first, #shape do if shape[i] ~= "B" then n = n * shape[i] end end
  return n
end
function ops.max_pool2d.saves(n)
  return { { name = "argmax", dtype = "int32", per_sample = dims_after(n.out.shape, 2) } }
end
function ops.batch_norm.saves(n)
  local c = n.inputs[1].shape[2]
  return { { name = "mean", count = c }, { name = "invstd", count = c } }
end
-- SyncBatchNorm (sync_batchnorm under ddp or fsdp; gen/strategy.lua): the doubles a
-- training forward sums over the ranks (per channel sum x, sum x^2, and the count) and
-- its backward (sum dout, sum dout*xhat, the count), as torch.nn.SyncBatchNorm reduces
function ops.batch_norm.synced(n)
  local c = n.inputs[1].shape[2]
  return { forward = 2 * c + 1, backward = 2 * c + 1 }
end
function ops.layer_norm.saves(n)
  local k = #n.attrs.normalized_shape
  local x = n.inputs[1]
  local per = 1
  for i = 2, #x.shape - k do per = per * x.shape[i] end
  return { { name = "mean", per_sample = per }, { name = "rstd", per_sample = per } }
end
function ops.cross_entropy.saves(n)
  return { { name = "logp", per_sample = dims_after(n.inputs[1].shape, 2) } }
end
function ops.max_dim.saves(n)
  return { { name = "index", dtype = "int32", per_sample = dims_after(n.out.shape, 2) } }
end
function ops.group_norm.saves(n)
  return { { name = "mean", per_sample = n.attrs.num_groups }, { name = "rstd", per_sample = n.attrs.num_groups } }
end
function ops.rms_norm.saves(n)
  local k = #n.attrs.normalized_shape
  local x = n.inputs[1]
  local per = 1
  for i = 2, #x.shape - k do per = per * x.shape[i] end
  return { { name = "rstd", per_sample = per } }
end
-- Whether attention runs as one fused kernel each way (flash attention: online softmax
-- over key tiles, saving only each row's logsumexp; the backward recomputes the
-- probabilities) instead of materialising the (L, S) attention matrix: the CUDA
-- backend's choice (gen/ops_cuda.lua), unless --gemm-attention, where the kernel's registers
-- hold a row (head dims at most 128; L and S numbers) and key and value are distinct
-- storage (its backward accumulates their gradients in one kernel).  `target`: {
-- backend, gemm_attention, root (a tensor's storage, through views and folded casts) }.
ops.scaled_dot_product_attention.FUSED_MAX_DIM = 128
function ops.scaled_dot_product_attention.fused(n, target)
  if not target or target.backend ~= "cuda" or target.gemm_attention then return false end
  local q, k, v = n.inputs[1].shape, n.inputs[2].shape, n.inputs[3].shape
  local r, max = #q, ops.scaled_dot_product_attention.FUSED_MAX_DIM
  if r < 3 or q[r] > max or v[r] > max or type(q[r - 1]) ~= "number" or type(k[r - 1]) ~= "number" then return false end
  return target.root(n.inputs[2]) ~= target.root(n.inputs[3])
end
-- the attention matrix (B, L, S) in f32, or (fused) each query row's logsumexp
function ops.scaled_dot_product_attention.saves(n, target)
  local q, k = n.inputs[1].shape, n.inputs[2].shape
  local r = #q
  local per = 1
  for i = 1, r - 2 do if q[i] ~= "B" then per = per * q[i] end end
  if ops.scaled_dot_product_attention.fused(n, target) then return { { name = "lse", per_sample = per * q[r - 1] } } end
  return { { name = "att", per_sample = per * q[r - 1] * k[r - 1] } }
end

-- How a loss's input is scored (the program's accuracy): "argmax" over the classes
-- (cross entropy with class indices), "threshold" (binary losses), or no accuracy.
function ops.cross_entropy.accuracy(n) return n.inputs[2].dtype == "int64" and "argmax" or nil end
function ops.bce.accuracy() return "threshold" end
function ops.nll_loss.accuracy() return "argmax" end
function ops.bce_with_logits.accuracy() return "threshold" end

---------------------------------------------------------------------------
-- Sampling (a declared entry point such as `generate`, gen/entries.lua)

-- autoregress(logits, idx, opts): the tokens a model samples one position at a time
-- from its logits (..., T, V) over the token window idx (..., T).  It is an entry
-- point's result, never part of the training step: the sampling loop is the program's
-- (--sample N), each new position computed from the cached earlier ones.
ops.autoregress = {
  arity = 2, precision = "fp32",
  shape = function(node, logits, idx)
    expect_float(node, logits, "logits")
    if idx.dtype ~= "int64" then
      err(node, string.format("autoregress expects integer token indices (a Tensor with dtype = 'int64'), gets %s", idx.dtype))
    end
    local sl, si = logits.shape, idx.shape
    local ok = #sl == #si + 1 and #si >= 1
    for i = 1, #si do if ok and sl[i] ~= si[i] then ok = false end end
    if not ok then
      err(node, string.format("autoregress expects logits (..., T, V) over tokens (..., T), gets logits %s and tokens %s",
        util.shape_str(sl), util.shape_str(si)))
    end
    return copy(si), "int64"
  end,
  flops = function() return 0 end,
}

-- `rows`: how an op runs one sequence position at a time (the decode step of sampling
-- with a key/value cache).  Given the time axis of each input (1-based; nil for a
-- tensor that does not depend on the tokens: a parameter or a view of one), it returns
-- the output's time axis, or nil and why the op cannot run position by position.
-- An op without `rows` cannot be in a sampled model's forward.
local function same_axis(node, axes)
  local a = axes[1]
  if a == nil then return nil, "its input does not depend on the tokens" end
  for i = 2, #node.inputs do if axes[i] ~= nil then return nil, "more than one of its inputs depends on the tokens" end end
  return a
end
-- (a third result, true: the output's row is the input's, element for element: a view)
local function same_row(node, axes)
  local a, why = same_axis(node, axes)
  return a, why, true
end
ops.embedding.rows = same_axis
ops.dropout.rows = same_row   -- (sampling runs in eval mode: the identity)
ops.cast.rows = same_row      -- (a narrowing one rounds: gen/entries.lua makes it a step of its own)
for _, name in ipairs { "relu", "silu", "sigmoid", "tanh", "gelu" } do ops[name].rows = same_axis end
function ops.linear.rows(node, axes)
  local a, why = same_axis(node, axes)
  if a and a == #node.inputs[1].shape then return nil, "it mixes the positions (the sequence is its feature dimension)" end
  return a, why
end
function ops.layer_norm.rows(node, axes)
  local a, why = same_axis(node, axes)
  if a and a > #node.inputs[1].shape - #node.attrs.normalized_shape then return nil, "it normalizes over the positions" end
  return a, why
end
for _, name in ipairs { "add", "sub", "mul", "div" } do
  ops[name].rows = function(node, axes)
    local n, out = #node.out.shape, nil
    for i, x in ipairs(node.inputs) do
      if axes[i] then
        local o = axes[i] + n - #x.shape
        if out and out ~= o then return nil, "its operands' positions are on different dimensions" end
        out = o
      end
    end
    return out
  end
end
function ops.slice.rows(node, axes)
  local a = axes[1]
  if a == norm_dim(node, node.attrs.dim, #node.inputs[1].shape) then return nil, "it slices the sequence" end
  return a
end
-- a reshape keeps the positions when the dims before them (but the batch) hold as many
-- elements before as after, and the sequence stays one dim of the same size
function ops.reshape.rows(node, axes)
  local a, x, y = axes[1], node.inputs[1].shape, node.out.shape
  local before = 1
  for i = 1, a - 1 do if x[i] ~= "B" then before = before * x[i] end end
  local run = 1
  for i = 1, #y do
    if run == before and y[i] == x[a] then return i, nil, true end
    if y[i] ~= "B" then run = run * y[i] end
    if run > before then break end
  end
  return nil, "it merges or splits the sequence dimension"
end
ops.flatten.rows = ops.reshape.rows
local function permuted_rows(node, axes)
  local perm = ops[node.op].perm(node)
  local x, out, last, same = node.inputs[1].shape, nil, 0, true
  for i, d in ipairs(perm) do
    if d + 1 == axes[1] then out = i
    elseif x[d + 1] ~= "B" and x[d + 1] ~= 1 then   -- the row's dims keep their order: a view
      if d + 1 < last then same = false end
      last = d + 1
    end
  end
  return out, nil, same
end
ops.transpose.rows, ops.permute.rows = permuted_rows, permuted_rows
function ops.matmul.rows(node, axes)
  local a, b = node.inputs[1].shape, node.inputs[2].shape
  if axes[2] ~= nil or axes[1] == nil then return nil, "its right operand depends on the tokens" end
  if #a < 2 or #b ~= 2 or axes[1] ~= #a - 1 then
    return nil, "only (..., T, K) @ (K, N) with a fixed (K, N) runs position by position"
  end
  return #node.out.shape - 1
end
function ops.scaled_dot_product_attention.rows(node, axes)
  local n = #node.inputs[1].shape
  if not node.attrs.is_causal then return nil, "attention without is_causal = true reads later positions" end
  for i = 1, 3 do
    if axes[i] ~= n - 1 then return nil, "query, key and value must each have the sequence as their second-to-last dimension" end
  end
  return n - 1
end

-- Views: the output is the input's storage, read in another shape (no kernel, no copy).
ops.flatten.alias = true
ops.reshape.alias = true
ops.detach.alias = true

---------------------------------------------------------------------------
-- Tensors whose batch dimension is not first (an LSTM's h_n, (layers, B, H); x after
-- transpose(x, 0, 1)): the ops below compute on them as on any other tensor (their
-- sizes name B wherever it is: elementwise and broadcast ops, shapes and views, reductions
-- and softmax off the batch dim, linear, matmul).  tensor.apply refuses any other op
-- reading such a tensor, at its line: the modules take batch-first inputs.
local BATCH_ANYWHERE = { "relu", "silu", "sigmoid", "tanh", "gelu", "dropout", "cast", "detach",
  "add", "sub", "mul", "div", "maximum", "minimum", "pow_tensor", "where", "compare",
  "transpose", "permute", "slice", "cat", "reshape", "flatten",
  "sum", "mean", "amax", "var", "std", "max_dim", "argmax", "softmax", "log_softmax", "linear", "matmul" }
for _, name in ipairs(BATCH_ANYWHERE) do ops[name].batch_anywhere = true end
for name in pairs(UNARY) do ops[name].batch_anywhere = true end
-- the 0-based dim of the batch in `shape` when it is not the first (else nil)
function ops.batch_dim_inside(shape)
  for i = 2, #shape do if shape[i] == "B" then return i - 1 end end
  return nil
end

return ops
