-- tensor: symbolic tensors for tracing.  A spec's forward runs on these; every
-- operation on them checks shapes through the op table (gen/ops.lua) and appends
-- a node to the graph being traced.  Shapes include the batch dimension as the
-- symbol "B" in front, exactly as the PyTorch code would see them, so dims in
-- `sum(x, 1)` or `transpose(x, 1, 2)` mean what they mean in PyTorch.
local diag = require "diag"
local util = require "util"
local ops = require "ops"

local tensor = {}

local Tensor = {}          -- metatable of symbolic tensors
Tensor.__name = "Tensor"
local methods = {}

local current = nil        -- the graph being traced (set by gen/graph.lua)
local module_stack = {}    -- modules being applied, innermost last

function tensor.is(v) return getmetatable(v) == Tensor end

local no_grad_depth = 0    -- inside no_grad(function() ... end): ops record no gradient

function tensor.begin_trace(graph) current = graph; module_stack = {}; no_grad_depth = 0 end
function tensor.end_trace() current = nil end
function tensor.tracing() return current ~= nil end

function tensor.push_module(mod, call_where)
  module_stack[#module_stack + 1] = { mod = mod, call_where = call_where }
end
function tensor.pop_module() module_stack[#module_stack] = nil end
function tensor.current_module()
  local top = module_stack[#module_stack]
  return top and top.mod, top and top.call_where
end

-- A new tensor value in the current graph.
function tensor.new(shape, dtype, fields)
  local t = { shape = shape, dtype = dtype or "float" }
  for k, v in pairs(fields or {}) do t[k] = v end
  if current then
    current.ntensors = current.ntensors + 1
    t.id = current.ntensors
  end
  return setmetatable(t, Tensor)
end

-- Records one op: checks it through the op table and returns its output tensor.
-- `inputs` are tensors (nil allowed for optional ones such as a missing bias).
function tensor.apply(opname, inputs, attrs, where)
  local op = ops[opname]
  assert(op, "unknown op " .. tostring(opname))
  if not current then
    diag.fatal(where or diag.here(),
      string.format("%s can only be used on tensors inside a traced method (forward, loss, ...)", opname))
  end
  local mod, call_where = tensor.current_module()
  local node = {
    op = opname, inputs = inputs, attrs = attrs or {},
    -- a built-in module's op points at the module's constructor; any other op
    -- (functional, or inside a spec-defined forward) at the line that called it
    module = mod, where = where or (mod and mod.forward and mod.where) or diag.here(),
    call_where = call_where or diag.here(),
    no_grad = no_grad_depth > 0 or nil,   -- gen/autodiff.lua: its output needs no gradient
  }
  if not op.batch_anywhere then
    for _, x in pairs(inputs) do
      local d = tensor.is(x) and ops.batch_dim_inside(x.shape)
      if d then
        diag.fatal(node.call_where, string.format("%s: its input %s has the batch dimension at dim %d; it takes batch-first tensors "
          .. "(transpose(x, 0, %d) first)", node.module and node.module.call_text or (attrs and attrs.as) or opname,
          util.shape_str(x.shape), d, d))
      end
    end
  end
  local shape, dtype, extra = op.shape(node, table.unpack(inputs, 1, op.arity or #inputs))
  extra = extra or {}
  extra.node = node
  local out = tensor.new(shape, dtype or "float", extra)
  node.out = out
  node.index = #current.nodes + 1
  current.nodes[node.index] = node
  return out
end

-- no_grad(fn): runs fn() with gradient recording off, as `with torch.no_grad():`;
-- returns what fn returns.  Its ops' outputs never need a gradient.
function tensor.no_grad(fn)
  if type(fn) ~= "function" then
    diag.fatal(nil, "no_grad takes a function: no_grad(function() ... end), as `with torch.no_grad():`")
  end
  -- (an error inside ends the trace; begin_trace resets the depth)
  no_grad_depth = no_grad_depth + 1
  local r = table.pack(fn())
  no_grad_depth = no_grad_depth - 1
  return table.unpack(r, 1, r.n)
end

-- A built-in module made of several ops (MultiheadAttention, TransformerEncoderLayer):
-- tensor.node_count() before its forward, then tensor.mark_composite(rec, first, out, args)
-- marks the ops it recorded, so that gen/emit_torch.lua writes one call of the module
-- (`args`: the call's tensors) instead of its ops.
function tensor.node_count() return current and #current.nodes or 0 end
-- (`call`: optional { opts = ", keyword=value" after the args, suffix = "[0]",
-- outputs = { { tensor, suffix }, ... } further results of the same call (an LSTM's h_n, c_n),
-- which gen/emit_torch.lua takes from one call; kwargs = { { name, tensor[, ".bool()"] }, ... }
-- tensors passed by keyword })
function tensor.mark_composite(rec, first, out, args, call)
  local suffix = { [out.node] = call and call.suffix or "" }
  local shared = call and call.outputs and { }
  for _, o in ipairs(call and call.outputs or {}) do suffix[o[1].node] = o[2] end
  for i = first + 1, #current.nodes do
    local node = current.nodes[i]
    if suffix[node] then
      node.composite = { rec = rec, args = args, opts = call and call.opts, suffix = suffix[node], shared = shared,
                         kwargs = call and call.kwargs }
    elseif not node.composite_inner then node.composite_inner = rec end
  end
end

-- Raises the standard shape error for `node` (the module's or op's own words).
function tensor.shape_error(node, msg)
  local notes
  if node.module and node.call_where and node.call_where.line ~= (node.where and node.where.line) then
    notes = { { where = node.call_where, msg = "called here" } }
  end
  diag.fatal(node.where, msg, notes)
end

-- What a value that should have been a tensor is, for messages.
local function what_is(v)
  local mt = type(v) == "table" and getmetatable(v)
  if mt and mt.__name == "Module" then return "a module (call it on a tensor to get one)" end
  if mt and mt.__name == "TensorDecl" then return "a Tensor{...} declaration (those declare inputs and data fields)" end
  if type(v) == "table" then return "a table" end
  return type(v)
end

local function as_tensor_or_number(v, what)
  if tensor.is(v) or type(v) == "number" then return v end
  diag.fatal(nil, string.format("%s: expected a tensor or a number, got %s", what, what_is(v)))
end

local function binary(opname)
  return function(a, b)
    as_tensor_or_number(a, opname); as_tensor_or_number(b, opname)
    if type(a) == "number" then return tensor.apply(opname, { b }, { scalar = a, scalar_left = true }) end
    if type(b) == "number" then return tensor.apply(opname, { a }, { scalar = b }) end
    return tensor.apply(opname, { a, b })
  end
end
Tensor.__add = binary("add")
Tensor.__sub = binary("sub")
Tensor.__mul = binary("mul")
Tensor.__div = binary("div")
Tensor.__unm = function(a) return tensor.apply("mul", { a }, { scalar = -1 }) end
Tensor.__tostring = function(t) return "Tensor" .. util.shape_str(t.shape) end
-- Fields a tensor may or may not carry; absent ones read as nil.
local OPTIONAL_FIELDS = { param = true, input = true, factors = true, node = true, id = true }
Tensor.__index = function(t, k)
  local m = methods[k]
  if m then return m end
  if OPTIONAL_FIELDS[k] then return nil end
  if type(k) ~= "string" then
    diag.fatal(nil, string.format("tensors cannot be indexed with [%s]; use slice(x, dim, start, stop) or narrow", tostring(k)))
  end
  diag.fatal(nil, string.format("tensors have no field or method '%s'%s", tostring(k),
    util.did_you_mean(tostring(k), util.sorted_keys(methods))))
end
Tensor.__newindex = function(_, k)
  diag.fatal(nil, string.format("tensors are immutable (assignment to '%s')", tostring(k)))
end
Tensor.__len = function(t) return t.shape[1] end
Tensor.__call = function() diag.fatal(nil, "a tensor is not callable") end

-- The functional API: available in the spec as globals and as tensor methods.
local functional = {}
tensor.functional = functional

local function check_tensor(v, fname, argn)
  if not tensor.is(v) then
    diag.fatal(nil, string.format("%s: argument %d must be a tensor, got %s", fname, argn, what_is(v)))
  end
  return v
end

local function int_arg(v, fname, what, default)
  if v == nil then return default end
  if math.type(v) ~= "integer" then
    diag.fatal(nil, string.format("%s: %s must be an integer, got %s", fname, what, tostring(v)))
  end
  return v
end

local function required_int(v, fname, what)
  if v == nil then diag.fatal(nil, string.format("%s: %s is required", fname, what)) end
  return int_arg(v, fname, what)
end

local function dims_arg(args, fname)
  -- accepts f(x, 2, 3) or f(x, {2, 3})
  if type(args[1]) == "table" and not tensor.is(args[1]) then args = args[1] end
  local dims = {}
  for i, d in ipairs(args) do dims[i] = int_arg(d, fname, "dimension", nil) end
  return dims
end

function functional.cat(list, dim)
  if type(list) ~= "table" or tensor.is(list) then
    diag.fatal(nil, "cat: expects a list of tensors, cat{a, b} or cat({a, b}, dim)")
  end
  if #list == 0 then diag.fatal(nil, "cat: expects a non-empty list of tensors") end
  for i = 1, #list do check_tensor(list[i], "cat", i) end
  return tensor.apply("cat", list, { dim = int_arg(dim, "cat", "dim", 1) })
end
functional.concat = functional.cat

function functional.add(a, b) return Tensor.__add(a, b) end
function functional.sub(a, b) return Tensor.__sub(a, b) end
function functional.mul(a, b) return Tensor.__mul(a, b) end
function functional.div(a, b) return Tensor.__div(a, b) end

function functional.matmul(a, b)
  check_tensor(a, "matmul", 1); check_tensor(b, "matmul", 2)
  return tensor.apply("matmul", { a, b })
end

-- reshape(x, -1, 4, 5), x:view({-1, 20}), x:view(x:size(0), -1): sizes are
-- integers, one may be -1, and the batch size (what x:size(0) gives) may stand
-- where the batch goes.
function functional.reshape(x, ...)
  check_tensor(x, "reshape", 1)
  local args = { ... }
  if type(args[1]) == "table" and not tensor.is(args[1]) then args = args[1] end
  local dims = {}
  for i, d in ipairs(args) do dims[i] = d == "B" and d or int_arg(d, "reshape", "dimension", nil) end
  return tensor.apply("reshape", { x }, { dims = dims })
end
functional.view = functional.reshape

-- A PyTorch dim (0-based, negative from the end) of an n-d tensor → 1-based.
local function dim_index(fname, d, n, extra)
  extra = extra or 0          -- unsqueeze accepts one more position
  local lo, hi = -n - extra, n - 1 + extra
  if d < lo or d > hi then
    diag.fatal(nil, string.format("%s: dim %d is out of range for a %d-d tensor (expected in [%d, %d])", fname, d, n, lo, hi))
  end
  return (d < 0 and d + n + extra or d) + 1
end

-- unsqueeze / squeeze are reshapes (no data moves); the reshape node says which.
function functional.unsqueeze(x, dim)
  check_tensor(x, "unsqueeze", 1)
  local i = dim_index("unsqueeze", required_int(dim, "unsqueeze", "dim"), #x.shape, 1)
  local dims = {}
  for j, d in ipairs(x.shape) do dims[j] = d end
  table.insert(dims, i, 1)
  return tensor.apply("reshape", { x }, { dims = dims, as = "unsqueeze" })
end

-- squeeze(x, dim) drops `dim` if it has size 1 (else returns x); squeeze(x)
-- drops every dim of size 1.  The batch dimension is never dropped: its size
-- is not known when the program is generated.
function functional.squeeze(x, dim)
  check_tensor(x, "squeeze", 1)
  local drop = {}
  if dim ~= nil then
    local i = dim_index("squeeze", int_arg(dim, "squeeze", "dim"), #x.shape)
    if x.shape[i] == "B" then
      diag.fatal(nil, string.format("squeeze: dim %d is the batch dimension, whose size is not known here", dim))
    end
    drop[i] = x.shape[i] == 1
  else
    for i, d in ipairs(x.shape) do drop[i] = d == 1 end
  end
  local dims = {}
  for j, d in ipairs(x.shape) do if not drop[j] then dims[#dims + 1] = d end end
  if #dims == #x.shape then return x end
  return tensor.apply("reshape", { x }, { dims = dims, as = "squeeze" })
end

-- split(x, size, dim) / split(x, {sizes...}, dim) and chunk(x, n, dim): several
-- results, as torch.split and torch.chunk (dim defaults to 0 as there):
-- local q, k, v = qkv:split(C, 2)
function functional.split(x, size, dim)
  check_tensor(x, "split", 1)
  dim = int_arg(dim, "split", "dim", 0)
  local i = dim_index("split", dim, #x.shape)
  local len = x.shape[i]
  if len == "B" then diag.fatal(nil, "split: splitting the batch dimension is not supported") end
  local sizes = {}
  if type(size) == "table" and not tensor.is(size) then
    local total = 0
    for k, s in ipairs(size) do
      if math.type(s) ~= "integer" or s <= 0 then
        diag.fatal(nil, string.format("split: section %d must be a positive integer, got %s", k, tostring(s)))
      end
      sizes[k] = s; total = total + s
    end
    if total ~= len then
      diag.fatal(nil, string.format("split: sections %s add up to %d, but dim %d has size %d",
        util.shape_str(sizes), total, dim, len))
    end
  else
    size = int_arg(size, "split", "split_size", nil)
    if size == nil or size <= 0 then diag.fatal(nil, "split: split_size must be a positive integer") end
    for start = 0, len - 1, size do sizes[#sizes + 1] = math.min(size, len - start) end
  end
  local outs, start = {}, 0
  for k, s in ipairs(sizes) do
    outs[k] = tensor.apply("slice", { x }, { dim = dim, start = start, stop = start + s, step = 1 })
    start = start + s
  end
  return table.unpack(outs)
end

function functional.chunk(x, chunks, dim)
  check_tensor(x, "chunk", 1)
  chunks = int_arg(chunks, "chunk", "chunks", nil)
  if chunks == nil or chunks <= 0 then diag.fatal(nil, "chunk: chunks must be a positive integer") end
  dim = int_arg(dim, "chunk", "dim", 0)
  local len = x.shape[dim_index("chunk", dim, #x.shape)]
  if len == "B" then diag.fatal(nil, "chunk: splitting the batch dimension is not supported") end
  return functional.split(x, (len + chunks - 1) // chunks, dim)
end

function functional.flatten(x, start_dim, end_dim)
  check_tensor(x, "flatten", 1)
  return tensor.apply("flatten", { x }, {
    start_dim = int_arg(start_dim, "flatten", "start_dim", 0),
    end_dim = int_arg(end_dim, "flatten", "end_dim", -1) })
end

function functional.transpose(x, d0, d1)
  check_tensor(x, "transpose", 1)
  return tensor.apply("transpose", { x }, { dim0 = required_int(d0, "transpose", "dim0"), dim1 = required_int(d1, "transpose", "dim1") })
end

function functional.permute(x, ...)
  check_tensor(x, "permute", 1)
  return tensor.apply("permute", { x }, { dims = dims_arg({ ... }, "permute") })
end

local function reduction(name)
  return function(x, dim, keepdim)
    check_tensor(x, name, 1)
    local dims = nil
    if type(dim) == "table" then
      dims = dims_arg({ dim }, name)
      if #dims == 0 then dims = nil end      -- sum(x, {}) is over everything, as torch.sum(x, [])
    elseif dim ~= nil then dims = { int_arg(dim, name, "dim") } end
    if keepdim ~= nil and type(keepdim) ~= "boolean" then
      diag.fatal(nil, name .. ": keepdim must be true or false")
    end
    return tensor.apply(name, { x }, { dims = dims, keepdim = keepdim or false })
  end
end
functional.sum = reduction("sum")
functional.mean = reduction("mean")

-- slice(x, dim, start, stop[, step]) is x[..., start:stop:step, ...] on `dim`
-- (Python's slice rules: 0-based, stop exclusive, negative from the end, nil = open).
function functional.slice(x, dim, start, stop, step)
  check_tensor(x, "slice", 1)
  return tensor.apply("slice", { x }, {
    dim = required_int(dim, "slice", "dim"), start = int_arg(start, "slice", "start"),
    stop = int_arg(stop, "slice", "stop"), step = int_arg(step, "slice", "step", 1) })
end

-- narrow(x, dim, start, length): as torch.narrow, start may be negative and
-- the range must lie inside the dim (no clamping, unlike a slice).
function functional.narrow(x, dim, start, length)
  check_tensor(x, "narrow", 1)
  start = required_int(start, "narrow", "start"); length = required_int(length, "narrow", "length")
  return tensor.apply("slice", { x }, {
    dim = required_int(dim, "narrow", "dim"), start = start, stop = start + length, step = 1, length = length })
end

local function unary(name)
  return function(x, ...)
    check_tensor(x, name, 1)
    return tensor.apply(name, { x }, ...)
  end
end
functional.relu = unary("relu")
functional.detach = unary("detach")
functional.silu = unary("silu")
functional.sigmoid = unary("sigmoid")
functional.tanh = unary("tanh")
function functional.gelu(x, approximate)
  check_tensor(x, "gelu", 1)
  approximate = approximate or "none"
  if approximate ~= "none" and approximate ~= "tanh" then
    diag.fatal(nil, string.format("gelu: approximate must be 'none' or 'tanh', got '%s'", tostring(approximate)))
  end
  return tensor.apply("gelu", { x }, { approximate = approximate })
end
function functional.softmax(x, dim)
  check_tensor(x, "softmax", 1)
  return tensor.apply("softmax", { x }, { dim = int_arg(dim, "softmax", "dim") })
end
function functional.log_softmax(x, dim)
  check_tensor(x, "log_softmax", 1)
  return tensor.apply("log_softmax", { x }, { dim = int_arg(dim, "log_softmax", "dim") })
end

-- autoregress(logits, idx, {temperature = 1.0, top_k = 0}): the result of a sampling
-- entry point (a method such as `generate` beside forward, gen/entries.lua): tokens
-- drawn one at a time from the logits over the window idx, each appended to it.
function functional.autoregress(logits, idx, opts)
  check_tensor(logits, "autoregress", 1); check_tensor(idx, "autoregress", 2)
  opts = opts or {}
  if type(opts) ~= "table" or tensor.is(opts) then
    diag.fatal(nil, "autoregress: options must be a table, e.g. {temperature = 0.8, top_k = 40}")
  end
  for key in pairs(opts) do
    if key ~= "temperature" and key ~= "top_k" then
      diag.fatal(nil, string.format("autoregress: unknown option '%s'%s", tostring(key),
        util.did_you_mean(tostring(key), { "temperature", "top_k" })))
    end
  end
  local temp, k = opts.temperature or 1.0, opts.top_k or 0
  if type(temp) ~= "number" or temp < 0 or temp ~= temp or temp == math.huge then
    diag.fatal(nil, string.format("autoregress: temperature must be a number ≥ 0 (0: the most likely token), got %s", tostring(temp)))
  end
  if math.type(k) ~= "integer" or k < 0 then
    diag.fatal(nil, string.format("autoregress: top_k must be an integer ≥ 0 (0: every token), got %s", tostring(k)))
  end
  local V = logits.shape[#logits.shape]
  if type(V) == "number" and k > V then
    diag.fatal(nil, string.format("autoregress: top_k %d is more than the vocabulary (%d)", k, V))
  end
  return tensor.apply("autoregress", { logits, idx }, { temperature = temp + 0.0, top_k = k })
end

-- softmax(q kᵀ · scale [+ causal mask]) v, as torch.nn.functional's (one fused op).
function functional.scaled_dot_product_attention(q, k, v, opts)
  check_tensor(q, "scaled_dot_product_attention", 1); check_tensor(k, "scaled_dot_product_attention", 2)
  check_tensor(v, "scaled_dot_product_attention", 3)
  opts = opts or {}
  if type(opts) ~= "table" or tensor.is(opts) then
    diag.fatal(nil, "scaled_dot_product_attention: options must be a table, e.g. {is_causal = true}")
  end
  local allowed = { is_causal = "boolean", scale = "number", dropout_p = "number" }
  for key, val in pairs(opts) do
    if not allowed[key] then
      diag.fatal(nil, string.format("scaled_dot_product_attention: unknown option '%s'%s", tostring(key),
        util.did_you_mean(tostring(key), util.sorted_keys(allowed))))
    elseif type(val) ~= allowed[key] then
      diag.fatal(nil, string.format("scaled_dot_product_attention: %s must be a %s", key, allowed[key]))
    end
  end
  if (opts.dropout_p or 0) ~= 0 then
    diag.fatal(nil, "scaled_dot_product_attention: dropout_p is not supported yet (use a Dropout module on the output)")
  end
  return tensor.apply("scaled_dot_product_attention", { q, k, v },
    { is_causal = opts.is_causal or false, scale = opts.scale })
end

-- Elementwise functions with constants (gen/ops.lua's UNARY), torch's names and defaults.
local function number_arg(v, fname, what, default)
  if v == nil then return default end
  if type(v) ~= "number" then diag.fatal(nil, string.format("%s: %s must be a number, got %s", fname, what, what_is(v))) end
  return v + 0.0
end
function functional.leaky_relu(x, negative_slope)
  check_tensor(x, "leaky_relu", 1)
  return tensor.apply("leaky_relu", { x }, { negative_slope = number_arg(negative_slope, "leaky_relu", "negative_slope", 0.01) })
end
function functional.elu(x, alpha)
  check_tensor(x, "elu", 1)
  return tensor.apply("elu", { x }, { alpha = number_arg(alpha, "elu", "alpha", 1.0) })
end
function functional.softplus(x, beta, threshold)
  check_tensor(x, "softplus", 1)
  return tensor.apply("softplus", { x }, { beta = number_arg(beta, "softplus", "beta", 1.0),
    threshold = number_arg(threshold, "softplus", "threshold", 20.0) })
end
function functional.hardtanh(x, min_val, max_val)
  check_tensor(x, "hardtanh", 1)
  min_val, max_val = number_arg(min_val, "hardtanh", "min_val", -1.0), number_arg(max_val, "hardtanh", "max_val", 1.0)
  if min_val > max_val then diag.fatal(nil, "hardtanh: min_val cannot be greater than max_val") end
  return tensor.apply("hardtanh", { x }, { min_val = min_val, max_val = max_val })
end
function functional.relu6(x)
  check_tensor(x, "relu6", 1)
  return tensor.apply("hardtanh", { x }, { min_val = 0.0, max_val = 6.0, as = "relu6" })
end
for _, name in ipairs { "mish", "hardswish", "exp", "log", "sqrt", "rsqrt", "abs" } do functional[name] = unary(name) end
-- pow(x, exponent): a number exponent, or a tensor (broadcast)
function functional.pow(x, exponent)
  check_tensor(x, "pow", 1)
  if tensor.is(exponent) then return tensor.apply("pow_tensor", { x, exponent }) end
  return tensor.apply("pow", { x }, { exponent = number_arg(exponent, "pow", "exponent") or
    diag.fatal(nil, "pow: exponent is required") })
end
function functional.clamp(x, min, max)
  check_tensor(x, "clamp", 1)
  min, max = number_arg(min, "clamp", "min"), number_arg(max, "clamp", "max")
  if min == nil and max == nil then diag.fatal(nil, "clamp: at least one of min and max must be given") end
  return tensor.apply("clamp", { x }, { min = min, max = max })
end
functional.clip = functional.clamp
function functional.maximum(a, b)
  check_tensor(a, "maximum", 1); check_tensor(b, "maximum", 2)
  return tensor.apply("maximum", { a, b })
end
function functional.minimum(a, b)
  check_tensor(a, "minimum", 1); check_tensor(b, "minimum", 2)
  return tensor.apply("minimum", { a, b })
end

-- where(cond, a, b), masked_fill(x, mask, value): cond / mask an integer tensor (nonzero =
-- true: loom has no bool dtype), a and b tensors or numbers
function functional.where(cond, a, b)
  check_tensor(cond, "where", 1)
  local attrs = {}
  if type(a) == "number" then attrs.a = a + 0.0; a = nil elseif a ~= nil then check_tensor(a, "where", 2) end
  if type(b) == "number" then attrs.b = b + 0.0; b = nil elseif b ~= nil then check_tensor(b, "where", 3) end
  if not a and not b then diag.fatal(nil, "where: a and b cannot both be numbers") end
  return tensor.apply("where", { cond, a or b, a and b or nil }, attrs)
end
function functional.masked_fill(x, mask, value)
  check_tensor(x, "masked_fill", 1); check_tensor(mask, "masked_fill", 2)
  return tensor.apply("where", { mask, x }, { a = number_arg(value, "masked_fill", "value") or
    diag.fatal(nil, "masked_fill: value is required"), as = "masked_fill" })
end

-- amax(x, dim, keepdim); max(x) (everything) or max(x, dim, keepdim), which returns the
-- values (PyTorch's namedtuple's .values; the indices are not supported yet)
functional.amax = reduction("amax")
function functional.max(x, dim, keepdim)
  check_tensor(x, "max", 1)
  if dim == nil then return tensor.apply("amax", { x }, { keepdim = false, as = "max" }) end
  if type(keepdim) ~= "boolean" and keepdim ~= nil then diag.fatal(nil, "max: keepdim must be true or false") end
  return tensor.apply("max_dim", { x }, { dims = { int_arg(dim, "max", "dim") }, keepdim = keepdim or false })
end
-- var / std (x, dim, unbiased = true, keepdim = false), or {correction = c}
local function var_like(name)
  return function(x, dim, unbiased, keepdim, correction)
    check_tensor(x, name, 1)
    local dims
    if type(dim) == "table" then dims = dims_arg({ dim }, name); if #dims == 0 then dims = nil end
    elseif dim ~= nil then dims = { int_arg(dim, name, "dim") } end
    if unbiased ~= nil and type(unbiased) ~= "boolean" then diag.fatal(nil, name .. ": unbiased must be true or false") end
    if keepdim ~= nil and type(keepdim) ~= "boolean" then diag.fatal(nil, name .. ": keepdim must be true or false") end
    if correction ~= nil and unbiased ~= nil then diag.fatal(nil, name .. ": give unbiased or correction, not both") end
    local c = correction ~= nil and number_arg(correction, name, "correction") or ((unbiased == false) and 0.0 or 1.0)
    return tensor.apply(name, { x }, { dims = dims, keepdim = keepdim or false, correction = c })
  end
end
functional.var = var_like("var")
functional.std = var_like("std")

function functional.cosine_similarity(x1, x2, dim, eps)
  check_tensor(x1, "cosine_similarity", 1); check_tensor(x2, "cosine_similarity", 2)
  return tensor.apply("cosine_similarity", { x1, x2 }, { dim = int_arg(dim, "cosine_similarity", "dim", 1),
    eps = number_arg(eps, "cosine_similarity", "eps", 1e-8) })
end

-- Losses, with torch.nn.functional's names, defaults and keyword options.
local REDUCTIONS = { mean = true, sum = true, none = true }
local function loss_options(name, opts, allowed)
  opts = opts or {}
  if type(opts) ~= "table" then diag.fatal(nil, name .. ": options must be a table, e.g. {reduction = 'sum'}") end
  local out = { reduction = "mean" }
  for k, v in pairs(opts) do
    if allowed[k] == nil and k ~= "reduction" then
      local names = { "reduction" }
      for a in pairs(allowed) do names[#names + 1] = a end
      table.sort(names)
      diag.fatal(nil, string.format("%s: unknown option '%s'%s", name, tostring(k), util.did_you_mean(tostring(k), names)))
    end
    out[k] = v
  end
  if not REDUCTIONS[out.reduction] then
    diag.fatal(nil, string.format("%s: reduction must be 'mean', 'sum' or 'none', got '%s'", name, tostring(out.reduction)))
  end
  for k, default in pairs(allowed) do if out[k] == nil then out[k] = default end end
  return out
end

-- The inputs of a loss with PyTorch's per-class `weight` option (a float tensor of C
-- values, e.g. tensor({1, 2, 0.5})): a third input, taken out of the options
local function class_weighted(name, input, target, o)
  local w = o.weight
  o.weight = nil
  if w == false then return { input, target } end
  if not tensor.is(w) then
    diag.fatal(nil, string.format("%s: weight must be a tensor of one value per class, e.g. tensor({1.0, 2.0, 0.5}); got %s", name, type(w)))
  end
  return { input, target, w }
end

function functional.cross_entropy(input, target, opts)
  check_tensor(input, "cross_entropy", 1); check_tensor(target, "cross_entropy", 2)
  local o = loss_options("cross_entropy", opts, { ignore_index = -100, label_smoothing = 0.0, weight = false })
  if math.type(o.ignore_index) ~= "integer" then diag.fatal(nil, "cross_entropy: ignore_index must be an integer") end
  if type(o.label_smoothing) ~= "number" or o.label_smoothing < 0 or o.label_smoothing > 1 then
    diag.fatal(nil, "cross_entropy: label_smoothing must be a number in [0, 1]")
  end
  return tensor.apply("cross_entropy", class_weighted("cross_entropy", input, target, o), o)
end
for _, name in ipairs { "mse", "l1" } do
  functional[name] = function(input, target, opts)
    check_tensor(input, name, 1); check_tensor(target, name, 2)
    return tensor.apply(name, { input, target }, loss_options(name, opts, {}))
  end
end
-- A tensor option of a pointwise loss (weight, pos_weight) must broadcast to the input's
-- shape, as PyTorch's does
local function broadcasts_to(name, what, w, input)
  if not tensor.is(w) then diag.fatal(nil, string.format("%s: %s must be a tensor (e.g. tensor({2.0})), got %s", name, what, type(w))) end
  local sw, si = w.shape, input.shape
  local ok = #sw <= #si
  for k = 0, #sw - 1 do
    local a, b = sw[#sw - k], si[#si - k]
    if ok and a ~= 1 and a ~= b then ok = false end
  end
  if not ok then
    diag.fatal(nil, string.format("%s: %s of shape %s does not broadcast to the input's %s", name, what, util.shape_str(sw), util.shape_str(si)))
  end
end
-- bce and bce_with_logits with PyTorch's `weight` (each element's loss times it, before
-- the reduction) and bce_with_logits' `pos_weight` (the positive term's factor,
-- (1 - t) x + (1 + (pos_weight - 1) t) softplus(-x)): the unweighted loss per element,
-- written with the element-wise ops around it
for _, name in ipairs { "bce", "bce_with_logits" } do
  functional[name] = function(input, target, opts)
    check_tensor(input, name, 1); check_tensor(target, name, 2)
    local o = loss_options(name, opts, name == "bce" and { weight = false } or { weight = false, pos_weight = false })
    local w, pw = o.weight, o.pos_weight
    o.weight, o.pos_weight = nil, nil
    if not w and not pw then return tensor.apply(name, { input, target }, o) end
    if w then broadcasts_to(name, "weight", w, input) end
    if pw then broadcasts_to(name, "pos_weight", pw, input) end
    local l = tensor.apply(name, { input, target }, { reduction = "none" })
    if pw then l = l + (pw - 1) * target * functional.softplus(-input) end
    if w then l = l * w end
    if o.reduction == "mean" then return functional.mean(l) end
    if o.reduction == "sum" then return functional.sum(l) end
    return l
  end
end
function functional.smooth_l1(input, target, opts)
  check_tensor(input, "smooth_l1", 1); check_tensor(target, "smooth_l1", 2)
  local o = loss_options("smooth_l1", opts, { beta = 1.0 })
  if type(o.beta) ~= "number" or o.beta < 0 then diag.fatal(nil, "smooth_l1: beta must be a non-negative number") end
  if o.beta == 0 then return tensor.apply("l1", { input, target }, { reduction = o.reduction }) end   -- PyTorch: beta 0 is L1
  return tensor.apply("smooth_l1", { input, target }, o)
end
function functional.huber(input, target, opts)
  check_tensor(input, "huber", 1); check_tensor(target, "huber", 2)
  local o = loss_options("huber", opts, { delta = 1.0 })
  if type(o.delta) ~= "number" or o.delta <= 0 then diag.fatal(nil, "huber: delta must be a positive number") end
  return tensor.apply("huber", { input, target }, o)
end
function functional.nll_loss(input, target, opts)
  check_tensor(input, "nll_loss", 1); check_tensor(target, "nll_loss", 2)
  local o = loss_options("nll_loss", opts, { ignore_index = -100, weight = false })
  if math.type(o.ignore_index) ~= "integer" then diag.fatal(nil, "nll_loss: ignore_index must be an integer") end
  return tensor.apply("nll_loss", class_weighted("nll_loss", input, target, o), o)
end
-- kl_div(input, target): 'batchmean' as well as PyTorch's other reductions
function functional.kl_div(input, target, opts)
  check_tensor(input, "kl_div", 1); check_tensor(target, "kl_div", 2)
  local batchmean = type(opts) == "table" and opts.reduction == "batchmean"
  if batchmean then
    local copy = {}
    for k, v in pairs(opts) do copy[k] = v end
    copy.reduction = "sum"
    opts = copy
  end
  local o = loss_options("kl_div", opts, { log_target = false })
  if type(o.log_target) ~= "boolean" then diag.fatal(nil, "kl_div: log_target must be true or false") end
  if batchmean then o.reduction = "batchmean" end
  return tensor.apply("kl_div", { input, target }, o)
end
-- accuracy(input, target[, {threshold = 0.5}]): a metric for train.log (no gradient);
-- class indices: (input.argmax(1) == target).float().mean(); a float target: the share
-- of elements where (input > threshold) == (target > 0.5)
function functional.accuracy(input, target, opts)
  check_tensor(input, "accuracy", 1); check_tensor(target, "accuracy", 2)
  local threshold = 0.5
  if opts ~= nil then
    if type(opts) ~= "table" or tensor.is(opts) then diag.fatal(nil, "accuracy: the third argument is {threshold = x}") end
    for k in pairs(opts) do
      if k ~= "threshold" then diag.fatal(nil, string.format("accuracy: unknown option '%s' (it takes threshold)", tostring(k))) end
    end
    if opts.threshold ~= nil then threshold = number_arg(opts.threshold, "accuracy", "threshold") end
  end
  return tensor.apply("accuracy", { input, target }, { threshold = threshold + 0.0 })
end
functional.smooth_l1_loss = functional.smooth_l1
functional.huber_loss = functional.huber
functional.binary_cross_entropy = functional.bce
functional.binary_cross_entropy_with_logits = functional.bce_with_logits
functional.mse_loss = functional.mse
functional.l1_loss = functional.l1

-- argmax(x, dim, keepdim=false): the index of the first maximum along dim, int64
function functional.argmax(x, dim, keepdim)
  check_tensor(x, "argmax", 1)
  if dim == nil then
    diag.fatal(nil, "argmax: give dim (without it PyTorch's argmax is over the flattened tensor, the batch too)")
  end
  if keepdim ~= nil and type(keepdim) ~= "boolean" then diag.fatal(nil, "argmax: keepdim must be true or false") end
  return tensor.apply("argmax", { x }, { dims = { int_arg(dim, "argmax", "dim") }, keepdim = keepdim or false })
end
-- gt lt ge le eq ne (a, b): 1 where the comparison holds, else 0 (int64; PyTorch's bool)
for _, name in ipairs { "gt", "lt", "ge", "le", "eq", "ne" } do
  functional[name] = function(a, b)
    check_tensor(a, name, 1)
    if type(b) == "number" then return tensor.apply("compare", { a }, { as = name, scalar = b + 0.0 }) end
    check_tensor(b, name, 2)
    return tensor.apply("compare", { a, b }, { as = name })
  end
end

-- randn(d1, d2, ...) / rand(...): a tensor of N(0, 1) / U[0, 1) draws (torch.randn, torch.rand);
-- the first size may be the batch size (x:size(0)).  randn_like(x) / rand_like(x): of x's shape.
-- Seeded draws of the program's RNG (gen/ops.lua's `random`), without gradient.
local function random_sizes(fname, args)
  if type(args[1]) == "table" and not tensor.is(args[1]) then args = args[1] end
  if #args == 0 then diag.fatal(nil, string.format("%s: give the sizes, %s(x:size(0), 16)", fname, fname)) end
  local shape = {}
  for i, d in ipairs(args) do
    if d ~= "B" and (math.type(d) ~= "integer" or d <= 0) then
      diag.fatal(nil, string.format("%s: size %d must be a positive integer or the batch size (x:size(0)), got %s", fname, i,
        tensor.is(d) and "a tensor" or tostring(d)))
    end
    shape[i] = d
  end
  return shape
end
for name, dist in pairs { randn = "normal", rand = "uniform" } do
  functional[name] = function(...)
    return tensor.apply("random", {}, { shape = random_sizes(name, { ... }), dist = dist, as = name })
  end
  functional[name .. "_like"] = function(x, ...)
    check_tensor(x, name .. "_like", 1)
    if select("#", ...) > 0 then diag.fatal(nil, name .. "_like takes one tensor (its dtype and device are x's)") end
    return tensor.apply("random", { x }, { dist = dist, as = name .. "_like" })
  end
end

-- expand(x, d1, d2, ...) / x:expand(...): Tensor.expand; tile(x, r1, r2, ...) / x:tile(...):
-- torch.tile, Tensor.repeat with fewer repeats than dims allowed (ones in front; Lua's
-- `repeat` is a keyword).  Sizes as numbers or a list, -1 keeps a dim (expand),
-- x:size(0) is the batch.
local function tile(as)
  return function(x, ...)
    check_tensor(x, as, 1)
    local args = { ... }
    if type(args[1]) == "table" and not tensor.is(args[1]) then args = args[1] end
    if #args == 0 then diag.fatal(nil, as .. ": give the sizes") end
    local sizes = {}
    if as == "tile" then for _ = #args + 1, #x.shape do sizes[#sizes + 1] = 1 end end   -- torch.tile's ones in front
    for _, d in ipairs(args) do
      local i = #sizes + 1
      if d ~= "B" and math.type(d) ~= "integer" then
        diag.fatal(nil, string.format("%s: size %d must be an integer or the batch size (x:size(0)), got %s", as, i,
          tensor.is(d) and "a tensor" or tostring(d)))
      end
      sizes[i] = d
    end
    return tensor.apply("tile", { x }, { sizes = sizes, as = as })
  end
end
functional.expand = tile("expand")
functional.tile = tile("tile")

-- tensor(values): nested Lua tables of numbers → a constant of their shape (torch.tensor)
function functional.tensor(values, ...)
  if select("#", ...) > 0 then
    diag.fatal(nil, "tensor takes one argument, a (nested) table of numbers: tensor({{1, 2}, {3, 4}}) (no dtype or device: it is float)")
  end
  if type(values) ~= "table" or tensor.is(values) or getmetatable(values) ~= nil then
    diag.fatal(nil, string.format("tensor expects a (nested) table of numbers, got %s", what_is(values)))
  end
  local shape, flat = {}, {}
  local function walk(v, depth, path)
    if type(v) == "number" then
      if depth <= #shape then
        diag.fatal(nil, string.format("tensor: element %s is a number where a list of %d was expected (ragged nesting)", path, shape[depth]))
      end
      if v ~= v or v == math.huge or v == -math.huge then
        diag.fatal(nil, string.format("tensor: element %s is %s (not a finite number)", path, tostring(v)))
      end
      flat[#flat + 1] = v
      return
    end
    if type(v) ~= "table" or tensor.is(v) or #v == 0 then
      diag.fatal(nil, string.format("tensor: element %s is %s, not a number or a non-empty list", path,
        type(v) == "table" and (#v == 0 and "an empty table" or what_is(v)) or type(v)))
    end
    if shape[depth] == nil then
      if #flat > 0 then
        diag.fatal(nil, string.format("tensor: element %s is a list where a number was expected (ragged nesting)", path))
      end
      shape[depth] = #v
    elseif shape[depth] ~= #v then
      diag.fatal(nil, string.format("tensor: element %s has %d entries, its siblings %d (ragged nesting)", path, #v, shape[depth]))
    end
    for i = 1, #v do walk(v[i], depth + 1, path .. "[" .. (i - 1) .. "]") end
  end
  walk(values, 1, "")
  return tensor.apply("constant", {}, { shape = shape, values = flat, as = "tensor" })
end

-- Keyword arguments, as PyTorch takes them: a last argument that is a table of named
-- options fills the parameters of those names (mean(x, 1, {keepdim = true}),
-- softmax(x, {dim = -1})).  Each function's parameters after the first, in order.
local KEYWORDS = {
  cat = { "dim" }, concat = { "dim" },
  sum = { "dim", "keepdim" }, mean = { "dim", "keepdim" },
  softmax = { "dim" }, log_softmax = { "dim" }, gelu = { "approximate" },
  leaky_relu = { "negative_slope" }, elu = { "alpha" }, softplus = { "beta", "threshold" },
  hardtanh = { "min_val", "max_val" }, pow = { "exponent" }, clamp = { "min", "max" }, clip = { "min", "max" },
  amax = { "dim", "keepdim" }, max = { "dim", "keepdim" }, argmax = { "dim", "keepdim" },
  var = { "dim", "unbiased", "keepdim", "correction" }, std = { "dim", "unbiased", "keepdim", "correction" },
  cosine_similarity = { "x2", "dim", "eps" }, masked_fill = { "mask", "value" },
  flatten = { "start_dim", "end_dim" }, transpose = { "dim0", "dim1" },
  unsqueeze = { "dim" }, squeeze = { "dim" },
  split = { "split_size_or_sections", "dim" }, chunk = { "chunks", "dim" },
  slice = { "dim", "start", "stop", "step" }, narrow = { "dim", "start", "length" },
}
local function is_keywords(v)
  if type(v) ~= "table" or tensor.is(v) or getmetatable(v) ~= nil or next(v) == nil then return false end
  for k in pairs(v) do if type(k) ~= "string" then return false end end
  return true
end
for name, params in pairs(KEYWORDS) do
  local f = functional[name]
  functional[name] = function(first, ...)
    local args = table.pack(...)
    if args.n == 0 or not is_keywords(args[args.n]) then return f(first, ...) end
    local opts = args[args.n]
    args[args.n] = nil
    args.n = args.n - 1
    if args.n > #params then
      diag.fatal(nil, string.format("%s takes at most %d arguments after the first, got %d and options",
        name, #params, args.n))
    end
    local index = {}
    for i, p in ipairs(params) do index[p] = i end
    for k, v in pairs(opts) do
      local i = index[k]
      if not i then
        diag.fatal(nil, string.format("%s: unknown option '%s'%s; options: %s", name, k,
          util.did_you_mean(k, params), table.concat(params, ", ")))
      elseif i <= args.n and args[i] ~= nil then
        diag.fatal(nil, string.format("%s got two values for '%s' (argument %d and the option)", name, k, i + 1))
      end
      args[i] = v
      if i > args.n then args.n = i end
    end
    return f(first, table.unpack(args, 1, args.n))
  end
end

-- The reference entry of each function (gen/docs.lua renders them): its call, a
-- one-line summary, the PyTorch counterpart, and an example the docs suite builds on an
-- input x of per-sample shape `input` (a loss's example gets the model m and batch b;
-- `target`: its target's kind).  An alias names what it stands for.
tensor.doc = {
  cat = { "cat(tensors, dim=1)", "concatenates tensors along dim (PyTorch's default dim is 0, the batch; loom's is 1)",
          torch = "torch.cat", example = "cat({x, x}, 1)", input = { 4 } },
  concat = { alias_of = "cat" },
  add = { "add(a, b)", "a + b, broadcasting as PyTorch does (also written a + b)", torch = "torch.add", example = "add(x, x)", input = { 4 } },
  sub = { "sub(a, b)", "a - b (also written a - b)", torch = "torch.sub", example = "sub(x, x * 0.5)", input = { 4 } },
  mul = { "mul(a, b)", "a * b, elementwise (also written a * b)", torch = "torch.mul", example = "mul(x, x)", input = { 4 } },
  div = { "div(a, b)", "a / b, elementwise (also written a / b)", torch = "torch.div", example = "div(x, 2)", input = { 4 } },
  matmul = { "matmul(a, b)", "matrix product, batched over leading dimensions", torch = "torch.matmul",
             example = "matmul(x, transpose(x, 1, 2))", input = { 3, 4 } },
  reshape = { "reshape(x, d1, d2, ...)", "the same elements in a new shape; one size may be -1, x:size(0) is the batch",
              torch = "torch.reshape / Tensor.view", example = "reshape(x, x:size(0), -1)", input = { 3, 4 } },
  view = { alias_of = "reshape" },
  no_grad = { "no_grad(function() ... end)", "runs the function with gradient recording off and returns what it returns (a training_step's torch.no_grad())",
              torch = "torch.no_grad", example = "local y = no_grad(function() return x * 2 end); return x + y", input = { 4 } },
  detach = { "detach(x)", "x cut from the graph: no gradient flows back into x through it (also x:detach())",
             torch = "Tensor.detach", example = "x + detach(x) * 0.5", input = { 4 } },
  unsqueeze = { "unsqueeze(x, dim)", "inserts a dimension of size 1 at dim", torch = "torch.unsqueeze",
                example = "unsqueeze(x, 1)", input = { 4 } },
  squeeze = { "squeeze(x[, dim])", "drops dimensions of size 1 (never the batch)", torch = "torch.squeeze",
              example = "squeeze(x, 1)", input = { 1, 4 } },
  split = { "split(x, size_or_sizes, dim=0)", "splits into pieces of a size (or of the given sizes); returns several tensors",
            torch = "torch.split", example = "local a, b = split(x, 2, 1); return a * b", input = { 4 } },
  chunk = { "chunk(x, chunks, dim=0)", "splits into `chunks` nearly equal pieces; returns several tensors",
            torch = "torch.chunk", example = "local a, b = chunk(x, 2, {dim = 1}); return a + b", input = { 4 } },
  flatten = { "flatten(x, start_dim=0, end_dim=-1)", "flattens start_dim..end_dim into one dimension", torch = "torch.flatten",
              example = "flatten(x, 1)", input = { 3, 4 } },
  transpose = { "transpose(x, dim0, dim1)", "swaps two dimensions", torch = "torch.transpose",
                example = "transpose(x, 1, 2)", input = { 3, 4 } },
  permute = { "permute(x, d1, d2, ...)", "reorders the dimensions", torch = "torch.permute",
              example = "permute(x, 0, 2, 1)", input = { 3, 4 } },
  sum = { "sum(x[, dim][, keepdim])", "sum over dim (a number or a list; all when absent)", torch = "torch.sum",
          example = "sum(x, 1, {keepdim = true})", input = { 4 } },
  mean = { "mean(x[, dim][, keepdim])", "mean over dim (a number or a list; all when absent)", torch = "torch.mean",
           example = "mean(x, {dim = 1, keepdim = true})", input = { 4 } },
  slice = { "slice(x, dim, start, stop, step=1)", "x[..., start:stop:step, ...] on dim (Python's rules, 0-based)",
            torch = "Tensor indexing x[:, a:b]", example = "slice(x, 1, 0, 2)", input = { 4 } },
  narrow = { "narrow(x, dim, start, length)", "length elements of dim from start", torch = "torch.narrow",
             example = "narrow(x, 1, 1, 2)", input = { 4 } },
  relu = { "relu(x)", "max(x, 0)", torch = "torch.nn.functional.relu", example = "relu(x)", input = { 4 } },
  silu = { "silu(x)", "x · sigmoid(x)", torch = "torch.nn.functional.silu", example = "silu(x)", input = { 4 } },
  sigmoid = { "sigmoid(x)", "1 / (1 + exp(-x))", torch = "torch.sigmoid", example = "sigmoid(x)", input = { 4 } },
  tanh = { "tanh(x)", "hyperbolic tangent", torch = "torch.tanh", example = "tanh(x)", input = { 4 } },
  gelu = { "gelu(x, approximate='none')", "the Gaussian error linear unit", torch = "torch.nn.functional.gelu",
           example = 'gelu(x, {approximate = "tanh"})', input = { 4 } },
  softmax = { "softmax(x, dim)", "softmax along dim", torch = "torch.softmax", example = "softmax(x, {dim = -1})", input = { 4 } },
  log_softmax = { "log_softmax(x, dim)", "log of the softmax along dim, computed stably", torch = "torch.log_softmax",
                  example = "log_softmax(x, -1)", input = { 4 } },
  autoregress = { "autoregress(logits, idx, {temperature=1.0, top_k=0})",
    "in a method beside forward (e.g. generate): the program's --sample N draws N tokens, one position at a time "
    .. "with a key/value cache (temperature 0 or top_k 1: the most likely token)",
    torch = "nanoGPT's GPT.generate", example = "autoregress(m(x), x.idx, {temperature = 0.8, top_k = 40})" },
  scaled_dot_product_attention = { "scaled_dot_product_attention(q, k, v, {is_causal=false, scale=nil})",
    "softmax(q kᵀ · scale [+ causal mask]) v, one fused op", torch = "torch.nn.functional.scaled_dot_product_attention",
    example = "scaled_dot_product_attention(x, x, x, {is_causal = true})", input = { 2, 6, 8 } },
  cross_entropy = { "cross_entropy(logits, target, {weight=nil, reduction='mean', ignore_index=-100, label_smoothing=0})",
    "the loss of class logits against integer targets; val/acc is the argmax's accuracy",
    torch = "torch.nn.functional.cross_entropy", example = "cross_entropy(m(b), b.target, {label_smoothing = 0.1})",
    target = "class" },
  bce = { "bce(p, target, {weight=nil, reduction='mean'})", "binary cross-entropy of probabilities in [0, 1]; val/acc thresholds p at 0.5 (not with weight, which makes the loss element-wise ops around it: log accuracy(...) in train.log)",
    torch = "torch.nn.functional.binary_cross_entropy", example = "bce(sigmoid(m(b)), b.target)", target = "float" },
  bce_with_logits = { "bce_with_logits(logits, target, {weight=nil, reduction='mean', pos_weight=nil})",
    "binary cross-entropy of logits (sigmoid inside, stable); val/acc thresholds the logit at 0 (not with weight or pos_weight, which make the loss element-wise ops around it: log accuracy(...) in train.log)",
    torch = "torch.nn.functional.binary_cross_entropy_with_logits", example = "bce_with_logits(m(b), b.target)",
    target = "float" },
  mse = { "mse(input, target, {reduction='mean'})", "mean squared error (no val/acc)", torch = "torch.nn.functional.mse_loss",
    example = 'mse(m(b), b.target, {reduction = "sum"})', target = "float" },
  l1 = { "l1(input, target, {reduction='mean'})", "mean absolute error (no val/acc)", torch = "torch.nn.functional.l1_loss",
    example = "l1(m(b), b.target)", target = "float" },
  leaky_relu = { "leaky_relu(x, negative_slope=0.01)", "x > 0 ? x : negative_slope · x", torch = "torch.nn.functional.leaky_relu",
                 example = "leaky_relu(x, 0.2)", input = { 4 } },
  elu = { "elu(x, alpha=1.0)", "x > 0 ? x : alpha (eˣ - 1)", torch = "torch.nn.functional.elu", example = "elu(x)", input = { 4 } },
  mish = { "mish(x)", "x · tanh(softplus(x))", torch = "torch.nn.functional.mish", example = "mish(x)", input = { 4 } },
  softplus = { "softplus(x, beta=1, threshold=20)", "log(1 + e^(beta x)) / beta (x where beta x > threshold)",
               torch = "torch.nn.functional.softplus", example = "softplus(x, {beta = 2})", input = { 4 } },
  hardswish = { "hardswish(x)", "x · relu6(x + 3) / 6", torch = "torch.nn.functional.hardswish", example = "hardswish(x)", input = { 4 } },
  hardtanh = { "hardtanh(x, min_val=-1, max_val=1)", "x clamped to [min_val, max_val]", torch = "torch.nn.functional.hardtanh",
               example = "hardtanh(x, -2, 2)", input = { 4 } },
  relu6 = { "relu6(x)", "min(max(x, 0), 6)", torch = "torch.nn.functional.relu6", example = "relu6(x)", input = { 4 } },
  exp = { "exp(x)", "eˣ, elementwise", torch = "torch.exp", example = "exp(x)", input = { 4 } },
  log = { "log(x)", "the natural logarithm, elementwise", torch = "torch.log", example = "log(sigmoid(x))", input = { 4 } },
  sqrt = { "sqrt(x)", "the square root, elementwise", torch = "torch.sqrt", example = "sqrt(x * x + 1)", input = { 4 } },
  rsqrt = { "rsqrt(x)", "1 / sqrt(x), elementwise", torch = "torch.rsqrt", example = "rsqrt(x * x + 1)", input = { 4 } },
  abs = { "abs(x)", "|x|, elementwise", torch = "torch.abs", example = "abs(x)", input = { 4 } },
  pow = { "pow(x, exponent)", "x to a number's power, or to a tensor's (broadcast)", torch = "torch.pow",
          example = "pow(x, 2)", input = { 4 } },
  clamp = { "clamp(x, min=nil, max=nil)", "x limited to [min, max] (either may be nil)", torch = "torch.clamp",
            example = "clamp(x, {min = 0.1})", input = { 4 } },
  clip = { alias_of = "clamp" },
  maximum = { "maximum(a, b)", "the larger of a and b, elementwise (broadcast)", torch = "torch.maximum",
              example = "maximum(x, x * 0.5)", input = { 4 } },
  minimum = { "minimum(a, b)", "the smaller of a and b, elementwise (broadcast)", torch = "torch.minimum",
              example = "minimum(x, x * 0.5)", input = { 4 } },
  amax = { "amax(x[, dim][, keepdim])", "the maximum over dim (a number or a list; all when absent)", torch = "torch.amax",
           example = "amax(x, 1, {keepdim = true})", input = { 4 } },
  max = { "max(x[, dim][, keepdim])", "the maximum of all elements, or the maximum values over dim (torch.max(x, dim).values)",
          torch = "torch.max", example = "max(x, 1)", input = { 4 } },
  var = { "var(x[, dim][, unbiased=true][, keepdim=false])", "the variance over dim (or {correction = c})", torch = "torch.var",
          example = "var(x, 1, {keepdim = true})", input = { 4 } },
  std = { "std(x[, dim][, unbiased=true][, keepdim=false])", "the standard deviation over dim (or {correction = c})",
          torch = "torch.std", example = "std(x, 1, {unbiased = false})", input = { 4 } },
  cosine_similarity = { "cosine_similarity(x1, x2, dim=1, eps=1e-8)", "x1·x2 / max(‖x1‖ ‖x2‖, eps) along dim",
                        torch = "torch.nn.functional.cosine_similarity", example = "cosine_similarity(x, x * 2 + 1)", input = { 4 } },
  smooth_l1 = { "smooth_l1(input, target, {reduction='mean', beta=1.0})", "the smooth L1 loss (quadratic below beta; no val/acc)",
                torch = "torch.nn.functional.smooth_l1_loss", example = "smooth_l1(m(b), b.target, {beta = 0.5})", target = "float" },
  huber = { "huber(input, target, {reduction='mean', delta=1.0})", "the Huber loss (quadratic below delta; no val/acc)",
            torch = "torch.nn.functional.huber_loss", example = "huber(m(b), b.target)", target = "float" },
  nll_loss = { "nll_loss(logp, target, {weight=nil, reduction='mean', ignore_index=-100})",
               "the negative log-likelihood of log-probabilities and class indices; val/acc is the argmax's accuracy",
               torch = "torch.nn.functional.nll_loss", example = "nll_loss(log_softmax(m(b), 1), b.target)", target = "class" },
  kl_div = { "kl_div(logp, target, {reduction='mean', log_target=false})",
             "the KL divergence of log-probabilities from a target distribution ('batchmean': the sum over the batch size)",
             torch = "torch.nn.functional.kl_div", example = 'kl_div(log_softmax(m(b), 1), softmax(b.target, 1), {reduction = "batchmean"})',
             target = "float" },
  argmax = { "argmax(x, dim, keepdim=false)", "the index of the first maximum along dim (int64, no gradient; NaN counts as the maximum)",
             torch = "torch.argmax", example = "where(eq(argmax(x, 1, {keepdim = true}), 0), x, 0.0)", input = { 4 } },
  gt = { "gt(a, b)", "1 where a > b, else 0 (int64: PyTorch's bool; for where, masked_fill); b a number or a tensor, broadcast with a as PyTorch's (an integer tensor against a float one compared as a float)",
         torch = "torch.gt", example = "where(gt(x, 0.5), x, 0.0)", input = { 4 } },
  lt = { "lt(a, b)", "1 where a < b, else 0 (int64, as gt)", torch = "torch.lt", example = "masked_fill(x, lt(x, x * 2), 1.0)", input = { 4 } },
  ge = { "ge(a, b)", "1 where a >= b, else 0 (int64, as gt)", torch = "torch.ge", example = "where(ge(x, 0.0), x, 0.0)", input = { 4 } },
  le = { "le(a, b)", "1 where a <= b, else 0 (int64, as gt)", torch = "torch.le", example = "where(le(x, 0.0), x, 0.0)", input = { 4 } },
  eq = { "eq(a, b)", "1 where a == b, else 0 (int64, as gt)", torch = "torch.eq", example = "where(eq(x, x), x, 0.0)", input = { 4 } },
  ne = { "ne(a, b)", "1 where a ~= b, else 0 (int64, as gt)", torch = "torch.ne", example = "where(ne(x, 0.0), x, 1.0)", input = { 4 } },
  randn = { "randn(d1, d2, ...)", "N(0, 1) draws of the given shape (the first size may be x:size(0)), seeded by the run's seed and step (no gradient)",
            torch = "torch.randn", example = "x + randn(x:size(0), 4) * 0.1", input = { 4 } },
  rand = { "rand(d1, d2, ...)", "U[0, 1) draws of the given shape, as randn", torch = "torch.rand",
           example = "x * rand(x:size(0), 4)", input = { 4 } },
  randn_like = { "randn_like(x)", "N(0, 1) draws of x's shape (as randn)", torch = "torch.randn_like",
                 example = "x + randn_like(x)", input = { 4 } },
  rand_like = { "rand_like(x)", "U[0, 1) draws of x's shape (as randn)", torch = "torch.rand_like",
                example = "x * rand_like(x)", input = { 4 } },
  expand = { "expand(x, d1, d2, ...)", "a view of x broadcast to a larger size: dims of size 1 grow, -1 keeps a dim, x:size(0) is the batch; the gradient sums over the copies",
             torch = "Tensor.expand", example = "x + expand(slice(x, 1, 0, 1), x:size(0), 4)", input = { 4 } },
  tile = { "tile(x, r1, r2, ...)", "x repeated r times along each dim, as x.repeat(r1, r2, ...) (Lua's `repeat` is a keyword; fewer r than dims: ones in front); the gradient sums over the copies",
           torch = "torch.tile / Tensor.repeat", example = "x + tile(slice(x, 1, 0, 2), 1, 2)", input = { 4 } },
  tensor = { "tensor(values)", "a constant tensor of the (nested) table's numbers and shape, no batch dimension, no gradient (e.g. rotary tables)",
             torch = "torch.tensor", example = "x * tensor({1, 2, 3, 4})", input = { 4 } },
  where = { "where(cond, a, b)", "cond ? a : b, elementwise; cond an integer tensor (nonzero = true), a and b tensors or numbers; the three broadcast together as PyTorch's",
            torch = "torch.where", example = "where(b.mask, x, 0.0)", input = { 4 }, mask = true },
  masked_fill = { "masked_fill(x, mask, value)", "x with value where mask (an integer tensor, broadcast to x's shape) is nonzero; value may be -math.huge (-inf)",
                  torch = "Tensor.masked_fill", example = "masked_fill(x, b.mask, -1.0)", input = { 4 }, mask = true },
  accuracy = { "accuracy(input, target, {threshold=0.5})",
               "a metric for train.log, without gradient: the share of argmax(input, 1) == target (class indices), or of (input > threshold) == (target > 0.5)",
               torch = "(input.argmax(1) == target).float().mean()", example = "accuracy(m(b), b.target)", target = "class" },
  smooth_l1_loss = { alias_of = "smooth_l1" },
  huber_loss = { alias_of = "huber" },
  binary_cross_entropy = { alias_of = "bce" },
  binary_cross_entropy_with_logits = { alias_of = "bce_with_logits" },
  mse_loss = { alias_of = "mse" },
  l1_loss = { alias_of = "l1" },
}

-- Tensor methods: x:view(...), x:sum(1), ...; plus x:size(d) and x:dim().
functional.no_grad = tensor.no_grad   -- a global only: it takes a function, not a tensor
local NOT_METHODS = { cat = true, concat = true, no_grad = true, tensor = true, randn = true, rand = true }
for k, f in pairs(functional) do if not NOT_METHODS[k] then methods[k] = f end end
function methods.size(t, d)
  if d == nil then return { table.unpack(t.shape) } end   -- a copy: shapes are immutable
  local n = #t.shape
  d = int_arg(d, "size", "dim")
  if d < 0 then d = d + n end
  if d < 0 or d >= n then diag.fatal(nil, string.format("size: dim %d out of range for a %d-d tensor", d, n)) end
  return t.shape[d + 1]
end
function methods.dim(t) return #t.shape end
-- x:t(), as Tensor.t(): transposes a 2-d tensor, returns a 0-d or 1-d one as is
function methods.t(x)
  check_tensor(x, "t", 1)
  local n = #x.shape
  if n > 2 then
    diag.fatal(nil, string.format("t() expects a tensor with <= 2 dimensions, gets %d-d %s (use transpose)",
      n, util.shape_str(x.shape)))
  end
  if n < 2 then return x end
  return functional.transpose(x, 0, 1)
end
function methods.numel(t)
  for _, d in ipairs(t.shape) do
    if d == "B" then
      diag.fatal(nil, string.format("numel: a tensor %s has a batch dimension, whose size is not known here", util.shape_str(t.shape)))
    end
  end
  return util.numel(t.shape)
end

return tensor
