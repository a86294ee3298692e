-- nn: the module library.  Constructors take PyTorch's signatures and defaults
-- (positional arguments, then an options table: Conv2d(3, 16, 3, {padding = "same"})),
-- record where in the spec they were called, and know their parameters and
-- buffers (with PyTorch's names and initialisations), how PyTorch prints them, and
-- which ops their forward records.
--
-- A module value in a spec is an opaque proxy; its record lives in `records`.
-- Indexing a proxy gives a submodule (m.img_input, m.blocks[1]), a parameter
-- tensor while tracing (m.embed.weight), or a plain attribute.
local diag = require "diag"
local util = require "util"
local tensor = require "tensor"

local nn = {}
local records = setmetatable({}, { __mode = "k" })
local creation_counter = 0

local Proxy = { __name = "Module" }

function nn.is_module(v) return records[v] ~= nil end
function nn.record(v) return records[v] end

local function new_module(class, where, fields)
  creation_counter = creation_counter + 1
  local rec = { class = class, where = where, seq = creation_counter,
                params = {}, buffers = {}, children = {}, child_by_key = {},
                attrs = {}, methods = {} }
  for k, v in pairs(fields or {}) do rec[k] = v end
  local proxy = setmetatable({}, Proxy)
  records[proxy] = rec
  rec.proxy = proxy
  return proxy, rec
end

local function add_child(rec, name, key, child)
  rec.children[#rec.children + 1] = { name = name, mod = child }
  rec.child_by_key[key] = child
end

Proxy.__index = function(p, k)
  local rec = records[p]
  local child = rec.child_by_key[k]
  if child then return child end
  if rec.param_by_name and rec.param_by_name[k] then
    return nn.param_tensor(rec, k)
  end
  local a = rec.attrs[k]
  if a ~= nil then return a end
  local f = rec.methods[k]
  if f then return f end
  if rec.list and math.type(k) == "integer" then
    diag.fatal(nil, string.format("%s index %d out of range: it has %d modules (indices 1..%d in Lua)",
      rec.class, k, #rec.children, #rec.children))
  end
  local names = {}
  for key in pairs(rec.child_by_key) do if type(key) == "string" then names[#names + 1] = key end end
  for _, prm in ipairs(rec.params) do names[#names + 1] = prm.name end
  for key in pairs(rec.attrs) do names[#names + 1] = key end
  for key in pairs(rec.methods) do names[#names + 1] = key end
  diag.fatal(nil, string.format("%s has no submodule, parameter or attribute '%s'%s",
    rec.class, tostring(k), util.did_you_mean(tostring(k), names)))
end
Proxy.__newindex = function(p, k)
  diag.fatal(nil, string.format("cannot assign '%s' on %s: modules are fixed once defined", tostring(k), records[p].class))
end
Proxy.__len = function(p) return #records[p].children end
Proxy.__call = function(p, ...) return nn.apply(p, ...) end
Proxy.__tostring = function(p) return nn.repr(p) end

---------------------------------------------------------------------------
-- Parameters while tracing: gen/graph.lua installs the function that hands out
-- one leaf tensor per (module, parameter) per trace.

local param_source = nil
function nn.set_param_source(f) param_source = f end
-- call_observer(proxy, results) sees every module call's results (the graph stage finds
-- the model's output in the loss this way: train.log's `out`)
local call_observer
function nn.set_call_observer(f) call_observer = f end
function nn.param_tensor(rec, name)
  if not param_source then
    diag.fatal(nil, string.format("%s.%s can only be used inside a traced method", rec.class, name))
  end
  return param_source(rec, name)
end

---------------------------------------------------------------------------
-- Applying a module: built-in forward or the spec's own.

function nn.apply(p, ...)
  local rec = records[p]
  if not tensor.tracing() then
    diag.fatal(nil, string.format("%s can only be called inside a traced method (forward, loss, ...)", rec.class))
  end
  local call_where = diag.here(nn.apply)
  if call_where == false then call_where = select(2, tensor.current_module()) end
  tensor.push_module(rec, call_where)
  local results
  if rec.forward then
    local n = select("#", ...)
    if n ~= 1 and rec.class ~= "Sequential" and not (rec.max_inputs and n <= rec.max_inputs) then
      -- an LSTM's or GRU's final states passed along with its output (PyTorch's tuple)
      local second = select(2, ...)
      local state = type(second) == "table" and not tensor.is(second) and second[1] or second
      local from = tensor.is(state) and state.node and state.node.composite and state.node.composite.rec.class
      diag.fatal(call_where, string.format("%s takes %s, gets %d%s", rec.call_text or rec.class,
        rec.max_inputs and ("at most " .. rec.max_inputs .. " inputs") or "one input", n,
        n == 2 and (from == "LSTM" or from == "GRU") and " (LSTM and GRU return the output and the final states, as PyTorch: "
          .. "local out, state = m.lstm(x))" or ""))
    end
    results = table.pack(rec.forward(rec, ...))
  elseif rec.methods.forward then
    results = table.pack(rec.methods.forward(p, ...))
  else
    diag.fatal(call_where, string.format("%s has no forward method, so it cannot be called", rec.class))
  end
  tensor.pop_module()
  if call_observer then call_observer(p, results, call_where) end
  return table.unpack(results, 1, results.n)
end

local function input_tensor(rec, x, argn)
  if not tensor.is(x) then
    diag.fatal(nil, string.format("%s expects a tensor as input %d, gets %s", rec.call_text or rec.class, argn or 1,
      nn.is_module(x) and "a module" or type(x)))
  end
  return x
end

local function P(rec, name)
  if rec.param_by_name[name] then return nn.param_tensor(rec, name) end
  return nil
end

---------------------------------------------------------------------------
-- Argument binding with PyTorch's signatures.

local kinds = {}
local function bad(cls, name, want, v)
  local shown   -- never tostring(v) on a table: a module's repr may be half-built
  if type(v) == "string" then
    shown = "'" .. v .. "'"
  elseif type(v) == "table" then
    shown = nn.is_module(v) and "a module" or tensor.is(v) and "a tensor" or "a table"
  elseif type(v) == "function" then
    shown = "a function"
  else
    shown = tostring(v)
  end
  diag.error(nil, string.format("%s: %s must be %s, got %s", cls, name, want, shown))
  return nil
end
function kinds.int(cls, name, v)
  if math.type(v) ~= "integer" then return bad(cls, name, "an integer", v) end
  return v
end
function kinds.posint(cls, name, v)
  if math.type(v) ~= "integer" or v <= 0 then return bad(cls, name, "a positive integer", v) end
  return v
end
function kinds.number(cls, name, v)
  if type(v) ~= "number" then return bad(cls, name, "a number", v) end
  return v + 0.0
end
function kinds.posnumber(cls, name, v)
  if type(v) ~= "number" or v <= 0 then return bad(cls, name, "a positive number", v) end
  return v + 0.0
end
function kinds.prob(cls, name, v)
  if type(v) ~= "number" or v < 0 or v > 1 then return bad(cls, name, "a probability in [0, 1]", v) end
  return v + 0.0
end
function kinds.bool(cls, name, v)
  if type(v) ~= "boolean" then return bad(cls, name, "true or false", v) end
  return v
end
-- an int or a pair of ints → a pair
function kinds.pair(cls, name, v, min)
  min = min or 1
  if math.type(v) == "integer" and v >= min then return { v, v } end
  if type(v) == "table" and #v == 2 and math.type(v[1]) == "integer" and math.type(v[2]) == "integer"
     and v[1] >= min and v[2] >= min then
    return { v[1], v[2] }
  end
  return bad(cls, name, min == 0 and "a non-negative integer or a pair of them" or "a positive integer or a pair of them", v)
end
function kinds.pair0(cls, name, v) return kinds.pair(cls, name, v, 0) end
function kinds.padding(cls, name, v)
  if v == "same" or v == "valid" then return v end
  if type(v) == "string" then
    return bad(cls, name, "'same', 'valid', a non-negative integer or a pair of them", v)
  end
  return kinds.pair(cls, name, v, 0)
end
-- one value or a non-empty list of them (not a module), each passing ok; as(d) is what is kept
local function one_or_list(cls, name, v, ok, want, as)
  if ok(v) then return { as(v) } end
  if type(v) == "table" and #v >= 1 and not nn.is_module(v) then
    local out = {}
    for i, d in ipairs(v) do
      if not ok(d) then return bad(cls, name, want, v) end
      out[i] = as(d)
    end
    return out
  end
  return bad(cls, name, want, v)
end
local function positive_int(d) return math.type(d) == "integer" and d > 0 end
local function positive_number(d) return type(d) == "number" and d > 0 end
local function as_int(d) return d end
local function as_float(d) return d + 0.0 end
function kinds.shape(cls, name, v)
  return one_or_list(cls, name, v, positive_int, "a positive integer or a list of them", as_int)
end
function kinds.dim(cls, name, v)
  if v == false then return nil end
  return kinds.int(cls, name, v)
end
function kinds.gelu_approx(cls, name, v)
  if v ~= "none" and v ~= "tanh" then return bad(cls, name, "'none' or 'tanh'", v) end
  return v
end
-- an int or a 1-tuple → a 1-tuple (Conv1d's sizes)
function kinds.single(cls, name, v, min)
  min = min or 1
  if math.type(v) == "integer" and v >= min then return { v } end
  if type(v) == "table" and #v == 1 and math.type(v[1]) == "integer" and v[1] >= min then return { v[1] } end
  return bad(cls, name, min == 0 and "a non-negative integer" or "a positive integer", v)
end
function kinds.single0(cls, name, v) return kinds.single(cls, name, v, 0) end
function kinds.padding1(cls, name, v)
  if v == "same" or v == "valid" then return v end
  if type(v) == "string" then return bad(cls, name, "'same', 'valid' or a non-negative integer", v) end
  return kinds.single(cls, name, v, 0)
end
-- Upsample's size (positive ints) and scale_factor (positive numbers): one or a list
kinds.sizes = kinds.shape
function kinds.factors(cls, name, v)
  return one_or_list(cls, name, v, positive_number, "a positive number or a list of them", as_float)
end
function kinds.upsample_mode(cls, name, v)
  if v ~= "nearest" and v ~= "linear" and v ~= "bilinear" then
    return bad(cls, name, "'nearest', 'linear' or 'bilinear' (other modes are not supported yet)", v)
  end
  return v
end
function kinds.tel_activation(cls, name, v)
  if v ~= "relu" and v ~= "gelu" then return bad(cls, name, "'relu' or 'gelu'", v) end
  return v
end
function kinds.momentum(cls, name, v)
  if v == false then return false end     -- PyTorch's momentum=None: cumulative average
  return kinds.number(cls, name, v)
end
function kinds.padding_mode(cls, name, v)
  if v ~= "zeros" then
    return bad(cls, name, "'zeros' (other padding modes are not supported yet)", v)
  end
  return v
end

-- Is `t` an options table (string keys only, not a module or tensor)?
local function is_options(t)
  if type(t) ~= "table" or nn.is_module(t) or tensor.is(t) then return false end
  if #t > 0 then return false end
  return next(t) ~= nil
end

local function format_arg(v)
  if type(v) == "string" then return '"' .. v .. '"' end
  if nn.is_module(v) or tensor.is(v) or (type(v) == "table" and getmetatable(v) ~= nil) then return "…" end
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = format_arg(x) end
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  return tostring(v)
end

-- Binds `args` (a packed argument list) to `sig`: { {name, kind, default}, ... },
-- an entry with `required = true` has no default.
local function bind(cls, sig, args)
  local n = args.n
  local opts = {}
  if n > 0 and is_options(args[n]) then opts = args[n]; n = n - 1 end
  local out, given, nil_arg = {}, {}, {}
  local positional_text = {}
  if n > #sig then
    diag.error(nil, string.format("%s takes at most %d positional arguments, got %d", cls, #sig, n))
    n = #sig
  end
  for i = 1, n do
    local s = sig[i]
    if args[i] == nil then
      diag.error(nil, string.format("%s: argument %d (%s) is nil", cls, i, s[1]))
      nil_arg[s[1]] = true
    else
      given[s[1]] = args[i]
      positional_text[#positional_text + 1] = format_arg(args[i])
    end
  end
  local by_name = {}
  for _, s in ipairs(sig) do by_name[s[1]] = s end
  for k, v in pairs(opts) do
    if type(k) ~= "string" or not by_name[k] then
      local names = {}
      for _, s in ipairs(sig) do names[#names + 1] = s[1] end
      diag.error(nil, string.format("%s got an unexpected option '%s'%s; options: %s", cls, tostring(k),
        util.did_you_mean(tostring(k), names), table.concat(names, ", ")))
    elseif given[k] ~= nil then
      diag.error(nil, string.format("%s got multiple values for '%s'", cls, k))
    else
      given[k] = v
    end
  end
  for _, s in ipairs(sig) do
    local name, kind, default = s[1], s[2], s[3]
    local v = given[name]
    if v == nil then
      if s.required and not nil_arg[name] then
        diag.error(nil, string.format("%s is missing its required argument '%s'", cls, name))
      elseif default ~= nil and default ~= false then
        out[name] = kinds[kind](cls, name, default)
      else
        out[name] = default
      end
    else
      out[name] = kinds[kind](cls, name, v)
    end
  end
  -- How the user wrote the call, for messages: Linear(8000, 128)
  local shown = {}
  for i = 1, #positional_text do shown[i] = positional_text[i] end
  if #shown == 0 then
    for _, s in ipairs(sig) do
      if s.required and given[s[1]] ~= nil then shown[#shown + 1] = format_arg(given[s[1]]) end
    end
  end
  return out, cls .. "(" .. table.concat(shown, ", ") .. ")", given
end

---------------------------------------------------------------------------
-- Built-in modules.  `class` is the table of constructors the spec sees.

local class = {}
nn.class = class
-- Each class's reference entry (gen/docs.lua renders them): a one-line summary, the
-- PyTorch counterpart, an example the docs suite builds (`input`: the per-sample
-- shape it is applied to), and the signature.
nn.doc = {}

local function uniform_fan_in(fan_in) return { kind = "uniform_fan_in", fan_in = fan_in } end

-- Declares a built-in module class.
local function builtin(name, def)
  nn.doc[name] = def.doc and { summary = def.doc[1], torch = def.doc.torch, example = def.doc.example,
                               input = def.doc.input, input_dtype = def.doc.input_dtype, apply = def.doc.apply,
                               signature = def.signature }
  class[name] = function(...)
    local where = diag.here()
    local args = table.pack(...)
    -- `raw` keeps each argument as written: PyTorch prints some as given (2 vs (2, 2), 0 vs 0.0)
    local a, call_text, raw = bind(name, def.signature, args)
    local p, rec = new_module(name, where, { args = a, call_text = call_text, raw = raw,
      extra_repr = def.extra_repr, forward = def.forward, param_by_name = {} })
    if not diag.has_errors() and def.init then def.init(rec, a) end
    for _, prm in ipairs(rec.params) do rec.param_by_name[prm.name] = prm end
    return p
  end
end

local function param(rec, name, shape, init)
  rec.params[#rec.params + 1] = { name = name, shape = shape, init = init }
end
local function buffer(rec, name, shape, init, dtype)
  rec.buffers[#rec.buffers + 1] = { name = name, shape = shape, init = init, dtype = dtype or "float" }
end

builtin("Linear", {
  doc = { "a fully connected layer: y = x Wᵀ + b", torch = "torch.nn.Linear", example = "Linear(784, 128)", input = { 784 } },
  signature = { { "in_features", "posint", required = true }, { "out_features", "posint", required = true },
                { "bias", "bool", true } },
  init = function(rec, a)
    param(rec, "weight", { a.out_features, a.in_features }, { kind = "kaiming_uniform", fan_in = a.in_features })
    if a.bias then param(rec, "bias", { a.out_features }, uniform_fan_in(a.in_features)) end
  end,
  extra_repr = function(rec)
    local a = rec.args
    return string.format("in_features=%d, out_features=%d, bias=%s", a.in_features, a.out_features, util.pyrepr(a.bias))
  end,
  forward = function(rec, x)
    return tensor.apply("linear", { input_tensor(rec, x), P(rec, "weight"), P(rec, "bias") })
  end,
})

builtin("Conv2d", {
  doc = { "a 2-d convolution over (channels, height, width); padding may be 'same' or 'valid'",
          torch = "torch.nn.Conv2d", example = 'Conv2d(3, 16, 3, {padding = "same"})', input = { 3, 8, 8 } },
  signature = { { "in_channels", "posint", required = true }, { "out_channels", "posint", required = true },
                { "kernel_size", "pair", required = true }, { "stride", "pair", 1 }, { "padding", "padding", 0 },
                { "dilation", "pair", 1 }, { "groups", "posint", 1 }, { "bias", "bool", true },
                { "padding_mode", "padding_mode", "zeros" } },
  init = function(rec, a)
    a.stride = type(a.stride) == "table" and a.stride or { a.stride, a.stride }
    a.dilation = type(a.dilation) == "table" and a.dilation or { a.dilation, a.dilation }
    if type(a.padding) == "number" then a.padding = { a.padding, a.padding } end
    if a.in_channels % a.groups ~= 0 then
      diag.error(rec.where, string.format("%s: in_channels (%d) must be divisible by groups (%d)", rec.call_text, a.in_channels, a.groups))
    end
    if a.out_channels % a.groups ~= 0 then
      diag.error(rec.where, string.format("%s: out_channels (%d) must be divisible by groups (%d)", rec.call_text, a.out_channels, a.groups))
    end
    if a.padding == "same" and (a.stride[1] ~= 1 or a.stride[2] ~= 1) then
      diag.error(rec.where, string.format("%s: padding='same' is not supported for strided convolutions", rec.call_text))
    end
    local k = a.kernel_size
    local fan_in = (a.in_channels // a.groups) * k[1] * k[2]
    param(rec, "weight", { a.out_channels, a.in_channels // a.groups, k[1], k[2] }, { kind = "kaiming_uniform", fan_in = fan_in })
    if a.bias then param(rec, "bias", { a.out_channels }, uniform_fan_in(fan_in)) end
  end,
  extra_repr = function(rec)
    local a = rec.args
    local s = string.format("%d, %d, kernel_size=%s, stride=%s", a.in_channels, a.out_channels,
      util.pyrepr(a.kernel_size), util.pyrepr(a.stride))
    if type(a.padding) == "string" then s = s .. ", padding=" .. a.padding
    elseif a.padding[1] ~= 0 or a.padding[2] ~= 0 then s = s .. ", padding=" .. util.pyrepr(a.padding) end
    if a.dilation[1] ~= 1 or a.dilation[2] ~= 1 then s = s .. ", dilation=" .. util.pyrepr(a.dilation) end
    if a.groups ~= 1 then s = s .. ", groups=" .. a.groups end
    if not a.bias then s = s .. ", bias=False" end
    return s
  end,
  forward = function(rec, x)
    local a = rec.args
    local attrs = { kernel_size = a.kernel_size, stride = a.stride, dilation = a.dilation, groups = a.groups }
    if a.padding == "same" then
      attrs.padding_lo, attrs.padding_hi = {}, {}
      for i = 1, 2 do
        local total = a.dilation[i] * (a.kernel_size[i] - 1)
        attrs.padding_lo[i] = total // 2
        attrs.padding_hi[i] = total - total // 2
      end
      attrs.padding = attrs.padding_lo
    elseif a.padding == "valid" then
      attrs.padding = { 0, 0 }
    else
      attrs.padding = a.padding
    end
    return tensor.apply("conv2d", { input_tensor(rec, x), P(rec, "weight"), P(rec, "bias") }, attrs)
  end,
})

-- the pooling modules' arguments: stride defaults to kernel_size; no indices
local function pool_init(rec, a)
  if a.stride == nil or a.stride == false then a.stride = a.kernel_size end
  if a.return_indices then
    diag.error(rec.where, string.format("%s: return_indices=True is not supported (the forward would return (output, indices))", rec.call_text))
  end
end

local function pool(name, opname, sig, extra, doc)
  builtin(name, {
    doc = doc,
    signature = sig,
    init = pool_init,
    extra_repr = extra,
    forward = function(rec, x)
      local a = rec.args
      return tensor.apply(opname, { input_tensor(rec, x) }, {
        kernel_size = a.kernel_size, stride = a.stride, padding = a.padding,
        dilation = a.dilation, ceil_mode = a.ceil_mode, count_include_pad = a.count_include_pad })
    end,
  })
end
-- PyTorch prints a pooling argument as the user passed it: 2, or (2, 3)
local function pool_arg(raw, pair)
  if pair[1] == pair[2] and math.type(raw) == "integer" then return tostring(pair[1]) end
  return util.pyrepr(pair)
end
pool("MaxPool2d", "max_pool2d",
  { { "kernel_size", "pair", required = true }, { "stride", "pair", false }, { "padding", "pair0", 0 },
    { "dilation", "pair", 1 }, { "return_indices", "bool", false }, { "ceil_mode", "bool", false } },
  function(rec)
    local a, raw = rec.args, rec.raw
    return string.format("kernel_size=%s, stride=%s, padding=%s, dilation=%s, ceil_mode=%s",
      pool_arg(raw.kernel_size, a.kernel_size), pool_arg(raw.stride or raw.kernel_size, a.stride),
      pool_arg(raw.padding or 0, a.padding), pool_arg(raw.dilation or 1, a.dilation), util.pyrepr(a.ceil_mode))
  end, { "2-d max pooling; stride defaults to kernel_size", torch = "torch.nn.MaxPool2d", example = "MaxPool2d(2)",
         input = { 3, 8, 8 } })
pool("AvgPool2d", "avg_pool2d",
  { { "kernel_size", "pair", required = true }, { "stride", "pair", false }, { "padding", "pair0", 0 },
    { "ceil_mode", "bool", false }, { "count_include_pad", "bool", true } },
  function(rec)
    local a, raw = rec.args, rec.raw
    return string.format("kernel_size=%s, stride=%s, padding=%s",
      pool_arg(raw.kernel_size, a.kernel_size), pool_arg(raw.stride or raw.kernel_size, a.stride),
      pool_arg(raw.padding or 0, a.padding))
  end, { "2-d average pooling; stride defaults to kernel_size", torch = "torch.nn.AvgPool2d",
         example = "AvgPool2d(2, {stride = 2})", input = { 3, 8, 8 } })

-- torch.nn.MaxPool1d over (N, C, L): the 2-d op on (N, C, 1, L) with a (1, k) window
-- (no kernel of its own); the module prints its arguments as the user passed them
builtin("MaxPool1d", {
  doc = { "1-d max pooling over (N, C, L); stride defaults to kernel_size", torch = "torch.nn.MaxPool1d",
          example = "MaxPool1d(4)", input = { 3, 16 } },
  signature = { { "kernel_size", "single", required = true }, { "stride", "single", false }, { "padding", "single0", 0 },
                { "dilation", "single", 1 }, { "return_indices", "bool", false }, { "ceil_mode", "bool", false } },
  init = pool_init,
  extra_repr = function(rec)
    local a, raw = rec.args, rec.raw
    local function arg(r, v) return math.type(r) == "integer" and tostring(r) or util.pyrepr(v) end
    return string.format("kernel_size=%s, stride=%s, padding=%s, dilation=%s, ceil_mode=%s", arg(raw.kernel_size, a.kernel_size),
      arg(raw.stride or raw.kernel_size, a.stride), arg(raw.padding or 0, a.padding), arg(raw.dilation or 1, a.dilation),
      util.pyrepr(a.ceil_mode))
  end,
  forward = function(rec, x)
    local a = rec.args
    x = input_tensor(rec, x)
    if #x.shape ~= 3 then
      diag.fatal(nil, string.format("%s expects (N, C, L), gets %s", rec.call_text or rec.class, util.shape_str(x.shape)))
    end
    local first = tensor.node_count()
    local n, c = x.shape[1], x.shape[2]
    local x4 = tensor.apply("reshape", { x }, { dims = { n, c, 1, x.shape[3] }, as = "unsqueeze" })
    local y = tensor.apply("max_pool2d", { x4 }, { kernel_size = { 1, a.kernel_size[1] }, stride = { 1, a.stride[1] },
      padding = { 0, a.padding[1] }, dilation = { 1, a.dilation[1] }, ceil_mode = a.ceil_mode })
    local out = tensor.apply("reshape", { y }, { dims = { n, c, y.shape[4] }, as = "squeeze" })
    tensor.mark_composite(rec, first, out, { x })
    return out
  end,
})

-- A float argument as PyTorch prints it: PyTorch keeps the number the user
-- passed, so Dropout(0) prints p=0 and Dropout(0.0) prints p=0.0.
local function num_text(rec, name, pos)
  local raw = rec.raw and rec.raw[name]
  if math.type(raw) == "integer" then return tostring(raw) end
  return util.pyfloat(rec.args[name])
end

local function batchnorm(name, ndims, doc)
  builtin(name, {
    doc = doc,
    signature = { { "num_features", "posint", required = true }, { "eps", "posnumber", 1e-5 },
                  { "momentum", "momentum", 0.1 }, { "affine", "bool", true }, { "track_running_stats", "bool", true } },
    init = function(rec, a)
      local c = a.num_features
      if a.affine then
        param(rec, "weight", { c }, { kind = "ones" })
        param(rec, "bias", { c }, { kind = "zeros" })
      end
      if a.track_running_stats then
        buffer(rec, "running_mean", { c }, { kind = "zeros" })
        buffer(rec, "running_var", { c }, { kind = "ones" })
        buffer(rec, "num_batches_tracked", {}, { kind = "zeros" }, "int64")
      end
    end,
    extra_repr = function(rec)
      local a = rec.args
      return string.format("%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s", a.num_features,
        num_text(rec, "eps", 2), a.momentum == false and "None" or num_text(rec, "momentum", 3),
        util.pyrepr(a.affine), util.pyrepr(a.track_running_stats))
    end,
    forward = function(rec, x)
      local a = rec.args
      return tensor.apply("batch_norm", { input_tensor(rec, x), P(rec, "weight"), P(rec, "bias") },
        { num_features = a.num_features, eps = a.eps, momentum = a.momentum, ndims = ndims,
          track_running_stats = a.track_running_stats })
    end,
  })
end
batchnorm("BatchNorm1d", { 2, 3 }, { "batch normalization over (N, C) or (N, C, L), with running statistics",
  torch = "torch.nn.BatchNorm1d", example = "BatchNorm1d(16, {momentum = 0.05})", input = { 16 } })
batchnorm("BatchNorm2d", { 4 }, { "batch normalization over (N, C, H, W), with running statistics",
  torch = "torch.nn.BatchNorm2d", example = "BatchNorm2d(3)", input = { 3, 8, 8 } })

builtin("LayerNorm", {
  doc = { "layer normalization over the last dimensions (normalized_shape)", torch = "torch.nn.LayerNorm",
          example = "LayerNorm(32, {eps = 1e-6})", input = { 10, 32 } },
  signature = { { "normalized_shape", "shape", required = true }, { "eps", "posnumber", 1e-5 },
                { "elementwise_affine", "bool", true } },
  init = function(rec, a)
    if a.elementwise_affine then
      param(rec, "weight", a.normalized_shape, { kind = "ones" })
      param(rec, "bias", a.normalized_shape, { kind = "zeros" })
    end
  end,
  extra_repr = function(rec)
    local a = rec.args
    return string.format("%s, eps=%s, elementwise_affine=%s", util.pyrepr(a.normalized_shape),
      num_text(rec, "eps", 2), util.pyrepr(a.elementwise_affine))
  end,
  forward = function(rec, x)
    return tensor.apply("layer_norm", { input_tensor(rec, x), P(rec, "weight"), P(rec, "bias") },
      { normalized_shape = rec.args.normalized_shape, eps = rec.args.eps })
  end,
})

builtin("Embedding", {
  doc = { "a lookup table: integer indices → rows of weight", torch = "torch.nn.Embedding",
          example = "Embedding(100, 16, {padding_idx = 0})", input = { 10 }, input_dtype = "int64" },
  signature = { { "num_embeddings", "posint", required = true }, { "embedding_dim", "posint", required = true },
                { "padding_idx", "int", nil } },
  init = function(rec, a)
    if a.padding_idx and (a.padding_idx >= a.num_embeddings or a.padding_idx < -a.num_embeddings) then
      diag.error(rec.where, string.format("%s: padding_idx must be within num_embeddings", rec.call_text))
    elseif a.padding_idx and a.padding_idx < 0 then
      a.padding_idx = a.padding_idx + a.num_embeddings
    end
    param(rec, "weight", { a.num_embeddings, a.embedding_dim }, { kind = "normal", padding_idx = a.padding_idx })
  end,
  extra_repr = function(rec)
    local a = rec.args
    local s = string.format("%d, %d", a.num_embeddings, a.embedding_dim)
    if a.padding_idx then s = s .. ", padding_idx=" .. a.padding_idx end
    return s
  end,
  forward = function(rec, idx)
    return tensor.apply("embedding", { input_tensor(rec, idx), P(rec, "weight") }, { padding_idx = rec.args.padding_idx })
  end,
})

builtin("Dropout", {
  doc = { "zeroes elements with probability p while training, scales the rest by 1/(1-p)", torch = "torch.nn.Dropout",
          example = "Dropout(0.1)", input = { 32 } },
  signature = { { "p", "prob", 0.5 }, { "inplace", "bool", false } },
  extra_repr = function(rec) return string.format("p=%s, inplace=%s", num_text(rec, "p", 1), util.pyrepr(rec.args.inplace)) end,
  forward = function(rec, x) return tensor.apply("dropout", { input_tensor(rec, x) }, { p = rec.args.p }) end,
})

builtin("Flatten", {
  doc = { "flattens dimensions start_dim..end_dim into one (by default all but the batch)", torch = "torch.nn.Flatten",
          example = "Flatten()", input = { 3, 8, 8 } },
  signature = { { "start_dim", "int", 1 }, { "end_dim", "int", -1 } },
  extra_repr = function(rec) return string.format("start_dim=%d, end_dim=%d", rec.args.start_dim, rec.args.end_dim) end,
  forward = function(rec, x)
    return tensor.apply("flatten", { input_tensor(rec, x) }, { start_dim = rec.args.start_dim, end_dim = rec.args.end_dim })
  end,
})

local function activation(name, opname, doc, sig, extra, attrs)
  builtin(name, {
    doc = doc,
    signature = sig,
    extra_repr = extra or function() return "" end,
    forward = function(rec, x)
      return tensor.apply(opname, { input_tensor(rec, x) }, attrs and attrs(rec.args) or {})
    end,
  })
end
local function inplace_repr(rec) return rec.args.inplace and "inplace=True" or "" end
local function act_doc(summary, torch, example) return { summary, torch = torch, example = example, input = { 16 } } end
activation("ReLU", "relu", act_doc("max(x, 0), elementwise", "torch.nn.ReLU", "ReLU()"),
  { { "inplace", "bool", false } }, inplace_repr)
activation("SiLU", "silu", act_doc("x · sigmoid(x), elementwise (swish)", "torch.nn.SiLU", "SiLU()"),
  { { "inplace", "bool", false } }, inplace_repr)
activation("Sigmoid", "sigmoid", act_doc("1 / (1 + exp(-x)), elementwise", "torch.nn.Sigmoid", "Sigmoid()"), {})
activation("Tanh", "tanh", act_doc("tanh(x), elementwise", "torch.nn.Tanh", "Tanh()"), {})
activation("GELU", "gelu", act_doc("the Gaussian error linear unit; approximate = 'tanh' for the tanh form",
  "torch.nn.GELU", 'GELU({approximate = "tanh"})'), { { "approximate", "gelu_approx", "none" } },
  function(rec) return "approximate=" .. util.pyrepr(rec.args.approximate) end,
  function(a) return { approximate = a.approximate } end)
activation("Softmax", "softmax", act_doc("softmax along dim", "torch.nn.Softmax", "Softmax(-1)"), { { "dim", "dim", nil } },
  function(rec) return "dim=" .. (rec.args.dim == nil and "None" or tostring(rec.args.dim)) end,
  function(a) return { dim = a.dim } end)


-- a number PyTorch prints as passed, whose default is an int (Softplus's beta=1)
local function num_or_int_default(rec, name, default)
  local raw = rec.raw and rec.raw[name]
  if raw == nil then return tostring(default) end
  if math.type(raw) == "integer" then return tostring(raw) end
  return util.pyfloat(rec.args[name])
end
local function inplace_suffix(rec) return rec.args.inplace and ", inplace=True" or "" end
activation("LeakyReLU", "leaky_relu", act_doc("x > 0 ? x : negative_slope · x, elementwise", "torch.nn.LeakyReLU", "LeakyReLU(0.2)"),
  { { "negative_slope", "number", 0.01 }, { "inplace", "bool", false } },
  function(rec) return "negative_slope=" .. num_text(rec, "negative_slope") .. inplace_suffix(rec) end,
  function(a) return { negative_slope = a.negative_slope } end)
activation("ELU", "elu", act_doc("x > 0 ? x : alpha (eˣ - 1), elementwise", "torch.nn.ELU", "ELU()"),
  { { "alpha", "number", 1.0 }, { "inplace", "bool", false } },
  function(rec) return "alpha=" .. num_text(rec, "alpha") .. inplace_suffix(rec) end,
  function(a) return { alpha = a.alpha } end)
activation("Mish", "mish", act_doc("x · tanh(softplus(x)), elementwise", "torch.nn.Mish", "Mish()"),
  { { "inplace", "bool", false } }, inplace_repr)
activation("Softplus", "softplus", act_doc("log(1 + e^(beta x)) / beta, linear above threshold", "torch.nn.Softplus",
  "Softplus({beta = 2})"), { { "beta", "number", 1 }, { "threshold", "number", 20 } },
  function(rec)
    return string.format("beta=%s, threshold=%s", num_or_int_default(rec, "beta", 1), num_or_int_default(rec, "threshold", 20))
  end,
  function(a) return { beta = a.beta, threshold = a.threshold } end)
activation("Hardswish", "hardswish", act_doc("x · relu6(x + 3) / 6, elementwise", "torch.nn.Hardswish", "Hardswish()"),
  { { "inplace", "bool", false } })
activation("ReLU6", "hardtanh", act_doc("min(max(x, 0), 6), elementwise", "torch.nn.ReLU6", "ReLU6()"),
  { { "inplace", "bool", false } }, inplace_repr, function() return { min_val = 0.0, max_val = 6.0, as = "relu6" } end)
activation("Hardtanh", "hardtanh", act_doc("x clamped to [min_val, max_val], elementwise", "torch.nn.Hardtanh", "Hardtanh(-2, 2)"),
  { { "min_val", "number", -1.0 }, { "max_val", "number", 1.0 }, { "inplace", "bool", false } },
  function(rec)
    return string.format("min_val=%s, max_val=%s%s", num_text(rec, "min_val"), num_text(rec, "max_val"), inplace_suffix(rec))
  end,
  function(a) return { min_val = a.min_val, max_val = a.max_val } end)
activation("LogSoftmax", "log_softmax", act_doc("log of the softmax along dim, computed stably", "torch.nn.LogSoftmax", "LogSoftmax(1)"),
  { { "dim", "dim", nil } },
  function(rec) return "dim=" .. (rec.args.dim == nil and "None" or tostring(rec.args.dim)) end,
  function(a) return { dim = a.dim } end)

builtin("Identity", {
  doc = { "returns its input unchanged", torch = "torch.nn.Identity", example = "Identity()", input = { 16 } },
  signature = {},
  forward = function(rec, x) return input_tensor(rec, x) end,
})

builtin("Dropout2d", {
  doc = { "zeroes whole channels with probability p while training, scales the rest by 1/(1-p)", torch = "torch.nn.Dropout2d",
          example = "Dropout2d(0.1)", input = { 3, 8, 8 } },
  signature = { { "p", "prob", 0.5 }, { "inplace", "bool", false } },
  extra_repr = function(rec) return string.format("p=%s, inplace=%s", num_text(rec, "p"), util.pyrepr(rec.args.inplace)) end,
  forward = function(rec, x) return tensor.apply("dropout2d", { input_tensor(rec, x) }, { p = rec.args.p }) end,
})

builtin("GroupNorm", {
  doc = { "group normalization: each sample's channels in num_groups groups, each normalised", torch = "torch.nn.GroupNorm",
          example = "GroupNorm(2, 4)", input = { 4, 6, 6 } },
  signature = { { "num_groups", "posint", required = true }, { "num_channels", "posint", required = true },
                { "eps", "posnumber", 1e-5 }, { "affine", "bool", true } },
  init = function(rec, a)
    if a.num_channels % a.num_groups ~= 0 then
      diag.error(rec.where, string.format("%s: num_channels (%d) must be divisible by num_groups (%d)", rec.call_text, a.num_channels, a.num_groups))
    end
    if a.affine then
      param(rec, "weight", { a.num_channels }, { kind = "ones" })
      param(rec, "bias", { a.num_channels }, { kind = "zeros" })
    end
  end,
  extra_repr = function(rec)
    local a = rec.args
    return string.format("%d, %d, eps=%s, affine=%s", a.num_groups, a.num_channels, num_text(rec, "eps"), util.pyrepr(a.affine))
  end,
  forward = function(rec, x)
    local a = rec.args
    return tensor.apply("group_norm", { input_tensor(rec, x), P(rec, "weight"), P(rec, "bias") },
      { num_groups = a.num_groups, num_channels = a.num_channels, eps = a.eps })
  end,
})

local function instancenorm(name, ndim, doc)
  builtin(name, {
    doc = doc,
    signature = { { "num_features", "posint", required = true }, { "eps", "posnumber", 1e-5 },
                  { "momentum", "momentum", 0.1 }, { "affine", "bool", false }, { "track_running_stats", "bool", false } },
    init = function(rec, a)
      if a.track_running_stats then
        diag.error(rec.where, string.format("%s: track_running_stats=True is not supported yet", rec.call_text))
      end
      if a.affine then
        param(rec, "weight", { a.num_features }, { kind = "ones" })
        param(rec, "bias", { a.num_features }, { kind = "zeros" })
      end
    end,
    extra_repr = function(rec)
      local a = rec.args
      return string.format("%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s", a.num_features,
        num_text(rec, "eps"), a.momentum == false and "None" or num_text(rec, "momentum"),
        util.pyrepr(a.affine), util.pyrepr(a.track_running_stats))
    end,
    forward = function(rec, x)
      local a = rec.args
      return tensor.apply("group_norm", { input_tensor(rec, x), P(rec, "weight"), P(rec, "bias") },
        { num_groups = a.num_features, num_channels = a.num_features, eps = a.eps, ndim = ndim })
    end,
  })
end
instancenorm("InstanceNorm1d", 3, { "instance normalization over (N, C, L): each sample's channels normalised alone",
  torch = "torch.nn.InstanceNorm1d", example = "InstanceNorm1d(4, {affine = true})", input = { 4, 10 } })
instancenorm("InstanceNorm2d", 4, { "instance normalization over (N, C, H, W): each sample's channels normalised alone",
  torch = "torch.nn.InstanceNorm2d", example = "InstanceNorm2d(3)", input = { 3, 8, 8 } })

builtin("RMSNorm", {
  doc = { "root-mean-square normalization over the last dimensions; eps nil: the dtype's machine epsilon",
          torch = "torch.nn.RMSNorm (PyTorch 2.4)", example = "RMSNorm(32, {eps = 1e-6})", input = { 10, 32 } },
  signature = { { "normalized_shape", "shape", required = true }, { "eps", "posnumber", nil },
                { "elementwise_affine", "bool", true } },
  init = function(rec, a)
    if a.elementwise_affine then param(rec, "weight", a.normalized_shape, { kind = "ones" }) end
  end,
  extra_repr = function(rec)
    local a = rec.args
    return string.format("%s, eps=%s, elementwise_affine=%s", util.pyrepr(a.normalized_shape),
      a.eps == nil and "None" or num_text(rec, "eps"), util.pyrepr(a.elementwise_affine))
  end,
  forward = function(rec, x)
    return tensor.apply("rms_norm", { input_tensor(rec, x), P(rec, "weight") },
      { normalized_shape = rec.args.normalized_shape, eps = rec.args.eps })
  end,
})

builtin("AdaptiveAvgPool2d", {
  doc = { "average pooling to a fixed output size (1: global pooling)", torch = "torch.nn.AdaptiveAvgPool2d",
          example = "AdaptiveAvgPool2d(1)", input = { 3, 8, 8 } },
  signature = { { "output_size", "pair", required = true } },
  extra_repr = function(rec) return "output_size=" .. pool_arg(rec.raw.output_size, rec.args.output_size) end,
  forward = function(rec, x)
    return tensor.apply("adaptive_avg_pool", { input_tensor(rec, x) }, { output_size = rec.args.output_size })
  end,
})
builtin("AdaptiveAvgPool1d", {
  doc = { "average pooling of (N, C, L) to a fixed output length", torch = "torch.nn.AdaptiveAvgPool1d",
          example = "AdaptiveAvgPool1d(4)", input = { 3, 10 } },
  signature = { { "output_size", "posint", required = true } },
  extra_repr = function(rec) return "output_size=" .. rec.args.output_size end,
  forward = function(rec, x)
    return tensor.apply("adaptive_avg_pool", { input_tensor(rec, x) }, { output_size = { rec.args.output_size } })
  end,
})

builtin("Upsample", {
  doc = { "upsampling by size or scale_factor: mode 'nearest', 'linear' (N, C, L) or 'bilinear' (N, C, H, W)",
          torch = "torch.nn.Upsample", example = 'Upsample({scale_factor = 2, mode = "bilinear"})', input = { 3, 4, 4 } },
  signature = { { "size", "sizes", nil }, { "scale_factor", "factors", nil }, { "mode", "upsample_mode", "nearest" },
                { "align_corners", "bool", nil } },
  init = function(rec, a)
    if (a.size == nil) == (a.scale_factor == nil) then
      diag.error(rec.where, string.format("%s: give either size or scale_factor", rec.call_text))
    end
    if a.align_corners ~= nil and a.mode == "nearest" then
      diag.error(rec.where, string.format("%s: align_corners only applies to the linear modes", rec.call_text))
    end
  end,
  extra_repr = function(rec)
    local a = rec.args
    local info
    if a.scale_factor then
      info = "scale_factor=" .. (#a.scale_factor == 1 and type(rec.raw.scale_factor) ~= "table" and util.pyfloat(a.scale_factor[1])
        or util.pyrepr(a.scale_factor))
    else
      info = "size=" .. (type(rec.raw.size) == "table" and util.pyrepr(a.size) or tostring(a.size[1]))
    end
    return info .. ", mode=" .. a.mode
  end,
  forward = function(rec, x)
    local a = rec.args
    return tensor.apply("upsample", { input_tensor(rec, x) },
      { size = a.size, scale_factor = a.scale_factor, mode = a.mode, align_corners = a.align_corners or false })
  end,
})

-- ConvTranspose1d / ConvTranspose2d: PyTorch's signature (output_padding, groups, bias, dilation)
local function conv_transpose(name, nd, doc)
  local k = nd == 1 and "single" or "pair"
  local k0 = nd == 1 and "single0" or "pair0"
  builtin(name, {
    doc = doc,
    signature = { { "in_channels", "posint", required = true }, { "out_channels", "posint", required = true },
                  { "kernel_size", k, required = true }, { "stride", k, 1 }, { "padding", k0, 0 },
                  { "output_padding", k0, 0 }, { "groups", "posint", 1 }, { "bias", "bool", true }, { "dilation", k, 1 },
                  { "padding_mode", "padding_mode", "zeros" } },
    init = function(rec, a)
      for _, what in ipairs { "in_channels", "out_channels" } do
        if a[what] % a.groups ~= 0 then
          diag.error(rec.where, string.format("%s: %s (%d) must be divisible by groups (%d)", rec.call_text, what, a[what], a.groups))
        end
      end
      for i = 1, nd do
        if a.output_padding[i] >= a.stride[i] and a.output_padding[i] >= a.dilation[i] then
          diag.error(rec.where, string.format("%s: output_padding must be smaller than either stride or dilation", rec.call_text))
        end
      end
      local shape, fan_in = { a.in_channels, a.out_channels // a.groups }, a.out_channels // a.groups
      for i = 1, nd do shape[2 + i] = a.kernel_size[i]; fan_in = fan_in * a.kernel_size[i] end
      param(rec, "weight", shape, { kind = "kaiming_uniform", fan_in = fan_in })
      if a.bias then param(rec, "bias", { a.out_channels }, uniform_fan_in(fan_in)) end
    end,
    extra_repr = function(rec)
      local a = rec.args
      local function all(t, v) for i = 1, nd do if t[i] ~= v then return false end end return true end
      local s = string.format("%d, %d, kernel_size=%s, stride=%s", a.in_channels, a.out_channels,
        util.pyrepr(a.kernel_size), util.pyrepr(a.stride))
      if not all(a.padding, 0) then s = s .. ", padding=" .. util.pyrepr(a.padding) end
      if not all(a.dilation, 1) then s = s .. ", dilation=" .. util.pyrepr(a.dilation) end
      if not all(a.output_padding, 0) then s = s .. ", output_padding=" .. util.pyrepr(a.output_padding) end
      if a.groups ~= 1 then s = s .. ", groups=" .. a.groups end
      if not a.bias then s = s .. ", bias=False" end
      return s
    end,
    forward = function(rec, x)
      local a = rec.args
      return tensor.apply("conv_transpose", { input_tensor(rec, x), P(rec, "weight"), P(rec, "bias") },
        { kernel_size = a.kernel_size, stride = a.stride, padding = a.padding, output_padding = a.output_padding,
          dilation = a.dilation, groups = a.groups })
    end,
  })
end
conv_transpose("ConvTranspose2d", 2, { "a 2-d transposed convolution (the adjoint of Conv2d: upsampling by stride)",
  torch = "torch.nn.ConvTranspose2d", example = "ConvTranspose2d(4, 2, 2, {stride = 2})", input = { 4, 5, 5 } })
conv_transpose("ConvTranspose1d", 1, { "a 1-d transposed convolution over (channels, length)",
  torch = "torch.nn.ConvTranspose1d", example = "ConvTranspose1d(4, 2, 3, {stride = 2, output_padding = 1})", input = { 4, 10 } })

builtin("Conv1d", {
  doc = { "a 1-d convolution over (channels, length); padding may be 'same' or 'valid'",
          torch = "torch.nn.Conv1d", example = 'Conv1d(4, 8, 3, {padding = "same"})', input = { 4, 16 } },
  signature = { { "in_channels", "posint", required = true }, { "out_channels", "posint", required = true },
                { "kernel_size", "single", required = true }, { "stride", "single", 1 }, { "padding", "padding1", 0 },
                { "dilation", "single", 1 }, { "groups", "posint", 1 }, { "bias", "bool", true },
                { "padding_mode", "padding_mode", "zeros" } },
  init = function(rec, a)
    if a.in_channels % a.groups ~= 0 then
      diag.error(rec.where, string.format("%s: in_channels (%d) must be divisible by groups (%d)", rec.call_text, a.in_channels, a.groups))
    end
    if a.out_channels % a.groups ~= 0 then
      diag.error(rec.where, string.format("%s: out_channels (%d) must be divisible by groups (%d)", rec.call_text, a.out_channels, a.groups))
    end
    if a.padding == "same" and a.stride[1] ~= 1 then
      diag.error(rec.where, string.format("%s: padding='same' is not supported for strided convolutions", rec.call_text))
    end
    local fan_in = (a.in_channels // a.groups) * a.kernel_size[1]
    param(rec, "weight", { a.out_channels, a.in_channels // a.groups, a.kernel_size[1] }, { kind = "kaiming_uniform", fan_in = fan_in })
    if a.bias then param(rec, "bias", { a.out_channels }, uniform_fan_in(fan_in)) end
  end,
  extra_repr = function(rec)
    local a = rec.args
    local s = string.format("%d, %d, kernel_size=%s, stride=%s", a.in_channels, a.out_channels,
      util.pyrepr(a.kernel_size), util.pyrepr(a.stride))
    if type(a.padding) == "string" then s = s .. ", padding=" .. a.padding
    elseif a.padding[1] ~= 0 then s = s .. ", padding=" .. util.pyrepr(a.padding) end
    if a.dilation[1] ~= 1 then s = s .. ", dilation=" .. util.pyrepr(a.dilation) end
    if a.groups ~= 1 then s = s .. ", groups=" .. a.groups end
    if not a.bias then s = s .. ", bias=False" end
    return s
  end,
  forward = function(rec, x)
    local a = rec.args
    local attrs = { kernel_size = a.kernel_size, stride = a.stride, dilation = a.dilation, groups = a.groups }
    if a.padding == "same" then
      local total = a.dilation[1] * (a.kernel_size[1] - 1)
      attrs.padding_lo, attrs.padding_hi = { total // 2 }, { total - total // 2 }
      attrs.padding = attrs.padding_lo
    elseif a.padding == "valid" then
      attrs.padding = { 0 }
    else
      attrs.padding = a.padding
    end
    return tensor.apply("conv1d", { input_tensor(rec, x), P(rec, "weight"), P(rec, "bias") }, attrs)
  end,
})

-- Attention, as torch.nn.MultiheadAttention (batch_first = true only: loom's batch is
-- dim 0): q, k, v = in_proj(query, key, value), split into heads, softmax(q kᵀ/√d) v,
-- merged, out_proj.  m.attn(q, k, v[, opts]) returns the output only (PyTorch's first
-- result; loom's default differs: no weights unless asked); with opts.need_weights = true
-- it returns the output and the weights averaged over the heads (B, L, S), after dropout
-- as PyTorch's.  opts.key_padding_mask: a (B, S) tensor, integer (nonzero = a key to
-- ignore, PyTorch's True) or float (added to the scores); opts.attn_mask: an (L, S)
-- tensor, or a batch of them, (B, L, S) (every head the same) or (B, H, L, S) (PyTorch's
-- (B·H, L, S)), float (added to the scores, e.g. from tensor(...)) or integer (PyTorch's
-- bool: nonzero = not allowed, e.g. from a comparison); both masks apply, as PyTorch 2
-- merges them (1.13 refuses a float key_padding_mask beside a float attn_mask, and reads
-- it as bool beside a bool one); is_causal: the keys after each query ignored.  Without weights, masks or
-- dropout it is scaled_dot_product_attention; otherwise the scores are written out and a
-- masked score is -inf, as PyTorch's masked_fill: a query whose keys are all masked gets
-- NaN weights and output, as torch 1.13's MultiheadAttention gives.
local MASKED = -math.huge
local function mha_forward(rec, query, key, value, opts)
  local a = rec.args
  local name = rec.call_text or rec.class
  input_tensor(rec, query, 1)
  key, value = key or query, value or key or query
  input_tensor(rec, key, 2); input_tensor(rec, value, 3)
  local need_weights, causal, kpm, amask = false, false, nil, nil
  if opts ~= nil then
    if type(opts) ~= "table" or tensor.is(opts) then diag.fatal(nil, name .. ": the 4th argument must be an options table") end
    for k, v in pairs(opts) do
      if k == "need_weights" or k == "is_causal" then
        if type(v) ~= "boolean" then diag.fatal(nil, string.format("%s: %s must be true or false", name, k)) end
      elseif k == "key_padding_mask" or k == "attn_mask" then
        if not tensor.is(v) then diag.fatal(nil, string.format("%s: %s must be a tensor", name, k)) end
      else
        diag.fatal(nil, string.format("%s: unknown option '%s' (supported: need_weights, attn_mask, key_padding_mask, is_causal)",
          name, tostring(k)))
      end
    end
    need_weights, causal, kpm, amask = opts.need_weights == true, opts.is_causal == true, opts.key_padding_mask, opts.attn_mask
  end
  for i, t in ipairs { query, key, value } do
    if #t.shape ~= 3 or t.shape[3] ~= a.embed_dim then
      diag.fatal(nil, string.format("%s expects (batch, sequence, %d) inputs (batch_first), gets %s as input %d",
        name, a.embed_dim, util.shape_str(t.shape), i))
    end
  end
  local L, S = query.shape[2], key.shape[2]
  local H = a.num_heads
  if kpm and (#kpm.shape ~= 2 or kpm.shape[1] ~= "B" or kpm.shape[2] ~= S) then
    diag.fatal(nil, string.format("%s: key_padding_mask must be a (batch, %d) tensor, integer (nonzero = ignore the key) or float "
      .. "(added to the scores), gets %s %s", name, S, kpm.dtype, util.shape_str(kpm.shape)))
  end
  -- attn_mask: one (L, S) for every sample, or a batch of them: (B, L, S), one per sample
  -- for every head, or (B, H, L, S), loom's form of PyTorch's (B·H, L, S)
  local mshape = amask and amask.shape
  local batched = mshape and mshape[1] == "B"
  if amask and not (#mshape == 2 and mshape[1] == L and mshape[2] == S or
                    #mshape == 3 and batched and mshape[2] == L and mshape[3] == S or
                    #mshape == 4 and batched and mshape[2] == H and mshape[3] == L and mshape[4] == S) then
    diag.fatal(nil, string.format("%s: attn_mask must be (%d, %d), (batch, %d, %d) or (batch, %d, %d, %d) (PyTorch's (batch·heads, %d, %d)), "
      .. "a float tensor (added to the scores) or an integer one (nonzero = not allowed), gets %s %s",
      name, L, S, L, S, H, L, S, L, S, amask.dtype, util.shape_str(mshape)))
  end
  if amask and causal then
    diag.fatal(nil, name .. ": attn_mask with is_causal: give the causal part in attn_mask (PyTorch 1.13's MultiheadAttention has no is_causal)")
  end
  local first = tensor.node_count()
  local E = a.embed_dim
  local w, b = P(rec, "in_proj_weight"), P(rec, "in_proj_bias")
  local q, k, v
  local f = tensor.functional
  if query == key and key == value then
    q, k, v = f.split(tensor.apply("linear", { query, w, b }), E, 2)
  else
    local ws = { f.split(w, E, 0) }
    local bs = b and { f.split(b, E, 0) } or {}
    q = tensor.apply("linear", { query, ws[1], bs[1] })
    k = tensor.apply("linear", { key, ws[2], bs[2] })
    v = tensor.apply("linear", { value, ws[3], bs[3] })
  end
  local function heads(t) return f.transpose(f.reshape(t, "B", t.shape[2], H, E // H), 1, 2) end
  q, k, v = heads(q), heads(k), heads(v)
  local o, weights
  if a.dropout > 0 or need_weights or kpm or amask then
    local att = f.matmul(q, f.transpose(k, 2, 3)) * (1 / math.sqrt(E // H))   -- (B, H, L, S)
    if causal then   -- the keys after each query masked: a constant's nonzeros, as triu(1)
      local c = {}
      for i = 1, L do
        c[i] = {}
        for j = 1, S do c[i][j] = j > i and 1 or 0 end
      end
      att = f.masked_fill(att, f.gt(f.tensor(c), 0), MASKED)
    end
    local m = amask
    if m and #m.shape == 3 then m = f.reshape(m, "B", 1, L, S) end   -- (B, L, S): the same for every head
    if m and m.dtype == "float" then att = att + m
    elseif m then att = f.masked_fill(att, m, MASKED) end
    -- a float key_padding_mask is added (PyTorch's), after attn_mask as PyTorch 2's merged mask
    if kpm and kpm.dtype == "float" then att = att + f.reshape(kpm, "B", 1, 1, S)
    elseif kpm then att = f.masked_fill(att, f.reshape(kpm, "B", 1, 1, S), MASKED) end
    att = f.softmax(att, -1)
    if a.dropout > 0 then att = tensor.apply("dropout", { att }, { p = a.dropout }) end
    o = f.matmul(att, v)
    if need_weights then weights = f.mean(att, 1) end   -- average_attn_weights = True
  else
    o = tensor.apply("scaled_dot_product_attention", { q, k, v }, { is_causal = causal })
  end
  o = f.reshape(f.transpose(o, 1, 2), "B", L, E)
  local out = rec.child_by_key.out_proj(o)
  local kwargs = {}
  if amask then
    -- a batch of masks as PyTorch takes it: (B·H, L, S), sample-major
    local as_torch = #mshape == 3 and string.format(".repeat_interleave(%d, 0)", H)
      or #mshape == 4 and string.format(".reshape(-1, %d, %d)", L, S) or ""
    kwargs[#kwargs + 1] = { "attn_mask", amask, as_torch .. (amask.dtype ~= "float" and ".bool()" or "") }
  end
  if kpm then kwargs[#kwargs + 1] = { "key_padding_mask", kpm, kpm.dtype ~= "float" and ".bool()" or nil } end
  tensor.mark_composite(rec, first, out, { query, key, value }, {
    suffix = "[0]", kwargs = kwargs, outputs = weights and { { weights, "[1]" } } or nil,
    opts = ", need_weights=" .. (need_weights and "True" or "False") ..
      (causal and string.format(", attn_mask=torch.ones(%d, %d, dtype=torch.bool).triu(1)", L, S) or "") })
  if weights then return out, weights end
  return out
end

builtin("MultiheadAttention", {
  doc = { "multi-head attention (batch_first = true): m.attn(x, x, x) is self-attention; returns the output (and the head-averaged weights with {need_weights = true}; attn_mask (L, S), (B, L, S) or (B, H, L, S), key_padding_mask (B, S), integer or float, is_causal)",
          torch = "torch.nn.MultiheadAttention", example = "MultiheadAttention(16, 4, {batch_first = true})", input = { 5, 16 },
          apply = "return m.layer(x, x, x)" },
  signature = { { "embed_dim", "posint", required = true }, { "num_heads", "posint", required = true },
                { "dropout", "prob", 0.0 }, { "bias", "bool", true }, { "add_bias_kv", "bool", false },
                { "add_zero_attn", "bool", false }, { "kdim", "posint", nil }, { "vdim", "posint", nil },
                { "batch_first", "bool", false } },
  init = function(rec, a)
    rec.max_inputs = 4
    if a.embed_dim % a.num_heads ~= 0 then
      diag.error(rec.where, string.format("%s: embed_dim (%d) must be divisible by num_heads (%d)", rec.call_text, a.embed_dim, a.num_heads))
    end
    if not a.batch_first then
      diag.error(rec.where, string.format("%s: only batch_first = true is supported (loom's batch is dim 0)", rec.call_text))
    end
    for _, o in ipairs { "add_bias_kv", "add_zero_attn" } do
      if a[o] then diag.error(rec.where, string.format("%s: %s = true is not supported yet", rec.call_text, o)) end
    end
    if (a.kdim and a.kdim ~= a.embed_dim) or (a.vdim and a.vdim ~= a.embed_dim) then
      diag.error(rec.where, string.format("%s: kdim and vdim other than embed_dim are not supported yet", rec.call_text))
    end
    local E = a.embed_dim
    -- xavier_uniform_: U(±√(6 / (fan_in + fan_out))), as uniform_fan_in's U(±1/√f) with f = (3E + E) / 6
    param(rec, "in_proj_weight", { 3 * E, E }, { kind = "uniform_fan_in", fan_in = (3 * E + E) / 6 })
    if a.bias then param(rec, "in_proj_bias", { 3 * E }, { kind = "zeros" }) end
    local proj = class.Linear(E, E, { bias = a.bias })
    local prec = records[proj]
    prec.class = "NonDynamicallyQuantizableLinear"
    prec.where = rec.where
    if a.bias then prec.params[2].init = { kind = "zeros" } end   -- MHA's _reset_parameters zeroes it
    add_child(rec, "out_proj", "out_proj", proj)
  end,
  forward = mha_forward,
})

-- torch.nn.TransformerEncoderLayer (batch_first = true): post-norm by default, pre-norm
-- with norm_first; activation 'relu' or 'gelu'
builtin("TransformerEncoderLayer", {
  doc = { "a transformer encoder layer (self-attention and a feed-forward block, each with a residual and LayerNorm)",
          torch = "torch.nn.TransformerEncoderLayer", example = "TransformerEncoderLayer(16, 4, {dim_feedforward = 32, batch_first = true})",
          input = { 5, 16 } },
  signature = { { "d_model", "posint", required = true }, { "nhead", "posint", required = true },
                { "dim_feedforward", "posint", 2048 }, { "dropout", "prob", 0.1 }, { "activation", "tel_activation", "relu" },
                { "layer_norm_eps", "posnumber", 1e-5 }, { "batch_first", "bool", false }, { "norm_first", "bool", false } },
  init = function(rec, a)
    if not a.batch_first then
      diag.error(rec.where, string.format("%s: only batch_first = true is supported (loom's batch is dim 0)", rec.call_text))
    end
    local d, ff = a.d_model, a.dim_feedforward
    local children = {
      { "self_attn", class.MultiheadAttention(d, a.nhead, { dropout = a.dropout, batch_first = true }) },
      { "linear1", class.Linear(d, ff) }, { "dropout", class.Dropout(a.dropout) }, { "linear2", class.Linear(ff, d) },
      { "norm1", class.LayerNorm(d, { eps = a.layer_norm_eps }) }, { "norm2", class.LayerNorm(d, { eps = a.layer_norm_eps }) },
      { "dropout1", class.Dropout(a.dropout) }, { "dropout2", class.Dropout(a.dropout) },
    }
    for _, c in ipairs(children) do
      records[c[2]].where = rec.where
      add_child(rec, c[1], c[1], c[2])
    end
  end,
  forward = function(rec, x)
    local a, c = rec.args, rec.child_by_key
    local x0 = input_tensor(rec, x)
    local first = tensor.node_count()
    local function sa(t) return c.dropout1(c.self_attn(t, t, t)) end
    local function ff(t)
      local h = tensor.apply(a.activation, { c.linear1(t) }, a.activation == "gelu" and { approximate = "none" } or {})
      return c.dropout2(c.linear2(c.dropout(h)))
    end
    local out
    if a.norm_first then
      x = x + sa(c.norm1(x))
      out = x + ff(c.norm2(x))
    else
      x = c.norm1(x + sa(x))
      out = c.norm2(x + ff(x))
    end
    tensor.mark_composite(rec, first, out, { x0 })
    return out
  end,
})

-- LSTM and GRU (batch_first = true), unrolled over the sequence into the op table's ops:
-- one Linear of the whole input per layer and direction, then per step the hidden
-- state's Linear, the gates (PyTorch's order: LSTM i, f, g, o; GRU r, z, n) and the
-- state update; the steps' outputs concatenated (B, T, H · directions).  As PyTorch's:
-- m.lstm(x[, {h_0, c_0}]) returns the output and {h_n, c_n}, m.gru(x[, h_0]) the output
-- and h_n (Lua's several results: `local out, state = m.lstm(x)`), every state
-- (layers · directions, B, H) even with batch_first, layer-major and the reverse
-- direction second; without initial states they are zeros.  Dropout between layers
-- while training.
local function rnn(name, gates, doc)
  local lstm = gates == 4
  builtin(name, {
    doc = doc,
    signature = { { "input_size", "posint", required = true }, { "hidden_size", "posint", required = true },
                  { "num_layers", "posint", 1 }, { "bias", "bool", true }, { "batch_first", "bool", false },
                  { "dropout", "prob", 0.0 }, { "bidirectional", "bool", false } },
    init = function(rec, a)
      rec.max_inputs = 2   -- the input and the initial states
      if not a.batch_first then
        diag.error(rec.where, string.format("%s: only batch_first = true is supported (loom's batch is dim 0)", rec.call_text))
      end
      local H, dirs = a.hidden_size, a.bidirectional and 2 or 1
      local init = { kind = "uniform_fan_in", fan_in = H }   -- U(±1/√hidden_size), every tensor
      for l = 0, a.num_layers - 1 do
        local inp = l == 0 and a.input_size or H * dirs
        for d = 1, dirs do
          local sfx = "_l" .. l .. (d == 2 and "_reverse" or "")
          param(rec, "weight_ih" .. sfx, { gates * H, inp }, init)
          param(rec, "weight_hh" .. sfx, { gates * H, H }, init)
          if a.bias then
            param(rec, "bias_ih" .. sfx, { gates * H }, init)
            param(rec, "bias_hh" .. sfx, { gates * H }, init)
          end
        end
      end
    end,
    extra_repr = function(rec)
      local a = rec.args
      local s = string.format("%d, %d", a.input_size, a.hidden_size)
      if a.num_layers ~= 1 then s = s .. ", num_layers=" .. a.num_layers end
      if not a.bias then s = s .. ", bias=False" end
      if a.batch_first then s = s .. ", batch_first=True" end
      if a.dropout ~= 0 then s = s .. ", dropout=" .. num_text(rec, "dropout") end
      if a.bidirectional then s = s .. ", bidirectional=True" end
      return s
    end,
    forward = function(rec, x, state)
      local a = rec.args
      local f = tensor.functional
      input_tensor(rec, x)
      if #x.shape ~= 3 or x.shape[3] ~= a.input_size then
        diag.fatal(nil, string.format("%s expects a (batch, sequence, %d) input (batch_first), gets %s", rec.call_text,
          a.input_size, util.shape_str(x.shape)))
      end
      local T, H, dirs = x.shape[2], a.hidden_size, a.bidirectional and 2 or 1
      local LD = a.num_layers * dirs
      -- the initial states, each (layers · directions, B, H) as PyTorch's
      local h_0, c_0 = state, nil
      if lstm and state ~= nil then
        if type(state) ~= "table" or tensor.is(state) or #state ~= 2 or not tensor.is(state[1]) or not tensor.is(state[2]) then
          diag.fatal(nil, string.format("%s: the initial states must be a table {h_0, c_0} of two tensors, as PyTorch's tuple", rec.call_text))
        end
        h_0, c_0 = state[1], state[2]
      elseif state ~= nil and not tensor.is(state) then
        diag.fatal(nil, string.format("%s: the initial state h_0 must be a tensor, gets %s", rec.call_text,
          type(state) == "table" and "a table" or type(state)))
      end
      for i, s0 in ipairs { h_0 or false, c_0 or false } do
        if s0 and (s0.dtype ~= "float" or #s0.shape ~= 3 or s0.shape[1] ~= LD or s0.shape[2] ~= "B" or s0.shape[3] ~= H) then
          diag.fatal(nil, string.format("%s expects %s of shape (%d, B, %d) (layers · directions, batch, hidden_size), gets %s",
            rec.call_text, i == 1 and "h_0" or "c_0", LD, H, util.shape_str(s0.shape)))
        end
      end
      -- layer l, direction d's initial state: (B, H), a view of row k of the (LD, B, H) states
      local function initial(s0, k)
        return s0 and f.reshape(f.slice(s0, 0, k, k + 1), "B", H) or nil
      end
      local first = tensor.node_count()
      local x0 = x
      local h_last, c_last = {}, {}   -- each layer's and direction's final states, (B, 1, H)
      for l = 0, a.num_layers - 1 do
        if l > 0 and a.dropout > 0 then x = tensor.apply("dropout", { x }, { p = a.dropout }) end
        local outs = {}
        for d = 1, dirs do
          local sfx = "_l" .. l .. (d == 2 and "_reverse" or "")
          local w_hh, b_hh = P(rec, "weight_hh" .. sfx), P(rec, "bias_hh" .. sfx)
          local xw = tensor.apply("linear", { x, P(rec, "weight_ih" .. sfx), P(rec, "bias_ih" .. sfx) })   -- (B, T, gates·H)
          local k = l * dirs + d - 1
          local h, c = initial(h_0, k), initial(c_0, k)
          local steps = {}
          for j = 0, T - 1 do
            local t = d == 1 and j or T - 1 - j
            local g = f.reshape(f.slice(xw, 1, t, t + 1), "B", gates * H)
            local hw
            if h then hw = tensor.apply("linear", { h, w_hh, b_hh }) end
            if lstm then
              if hw then g = g + hw elseif b_hh then g = g + b_hh end
              local i, fg, gg, o = f.split(g, H, 1)
              local cand = f.sigmoid(i) * f.tanh(gg)
              c = c and (f.sigmoid(fg) * c + cand) or cand
              h = f.sigmoid(o) * f.tanh(c)
            else
              local xr, xz, xn = f.split(g, H, 1)
              local hr, hz, hn
              if hw then hr, hz, hn = f.split(hw, H, 1)
              elseif b_hh then hr, hz, hn = f.split(b_hh, H, 0) end
              local r = f.sigmoid(hr and xr + hr or xr)
              local z = f.sigmoid(hz and xz + hz or xz)
              local n = f.tanh(hn and xn + r * hn or xn)
              h = h and (n + z * (h - n)) or (n - z * n)
            end
            steps[t + 1] = f.unsqueeze(h, 1)
          end
          outs[d] = T == 1 and steps[1] or f.cat(steps, 1)
          h_last[#h_last + 1], c_last[#c_last + 1] = f.unsqueeze(h, 1), c and f.unsqueeze(c, 1)
        end
        x = #outs == 1 and outs[1] or f.cat(outs, 2)
      end
      -- the final states gathered batch first, (B, LD, H), then PyTorch's (LD, B, H): the
      -- transpose is the only op of an unused state whose output has B inside
      local function states(list) return f.transpose(#list == 1 and list[1] or f.cat(list, 1), 0, 1) end
      local h_n = states(h_last)
      local c_n = lstm and states(c_last) or nil
      local outputs = { { h_n, lstm and "[1][0]" or "[1]" } }
      if c_n then outputs[2] = { c_n, "[1][1]" } end
      local args = { x0 }
      if h_0 then args[2] = lstm and { h_0, c_0 } or h_0 end
      tensor.mark_composite(rec, first, x, args, { suffix = "[0]", outputs = outputs })
      if c_n then return x, { h_n, c_n } end
      return x, h_n
    end,
  })
end
rnn("LSTM", 4, { "a long short-term memory RNN (batch_first = true; layers, bidirectional): m.lstm(x[, {h_0, c_0}]) returns the output sequence and {h_n, c_n}, the states (layers · directions, B, hidden_size) as PyTorch's (zeros when not given)",
  torch = "torch.nn.LSTM", example = "LSTM(8, 16, {batch_first = true, num_layers = 2})", input = { 5, 8 },
  apply = "local out, state = m.layer(x); return out" })
rnn("GRU", 3, { "a gated recurrent unit RNN (batch_first = true; layers, bidirectional): m.gru(x[, h_0]) returns the output sequence and h_n, (layers · directions, B, hidden_size) as PyTorch's (zeros when not given)",
  torch = "torch.nn.GRU", example = "GRU(8, 16, {batch_first = true, bidirectional = true})", input = { 5, 8 },
  apply = "local out, h_n = m.layer(x); return out" })

---------------------------------------------------------------------------
-- Containers and user-defined modules.

local function module_list_from(cls, where, items, names)
  local p, rec = new_module(cls, where, { list = true })
  for i, child in ipairs(items) do add_child(rec, names and names[i] or tostring(i - 1), i, child) end
  return p, rec
end

local function check_modules(cls, t)
  for k, v in pairs(t) do
    if not nn.is_module(v) then
      diag.error(nil, string.format("%s: entry %s is not a module (got %s)", cls, tostring(k),
        tensor.is(v) and "a tensor" or type(v) == "function" and "a function; a module is made by calling its class, e.g. ReLU()"
        or type(v)))
      return false
    end
  end
  return true
end

-- A submodule's name, as PyTorch's add_module takes it: not empty and without
-- '.', which would make its tensors' names those of another's ("net.0" beside
-- net = Sequential {...}); and, for the generated C and the checkpoint, without
-- control characters.
local function check_child_names(cls, t, where)
  for _, k in ipairs(util.sorted_keys(t)) do
    if type(k) == "string" then
      local why = k == "" and "is empty"
        or k:find(".", 1, true) and "contains '.', which separates the parts of a tensor's name (as in net.0.weight)"
        or k:find("%c") and "contains a control character"
      if why then
        diag.error(diag.key_where(where, k), string.format("%s: the submodule name %s %s", cls, util.c_string(k), why))
      end
    end
  end
end

-- Named entries of a table, in the order they were created in the spec.
local function named_in_order(t)
  local names = {}
  for k, v in pairs(t) do if type(k) == "string" then names[#names + 1] = k end end
  table.sort(names, function(a, b)
    local ra, rb = records[t[a]], records[t[b]]
    local sa, sb = ra and ra.seq or math.huge, rb and rb.seq or math.huge
    if sa ~= sb then return sa < sb end
    return a < b
  end)
  return names
end

nn.doc.Sequential = { summary = "applies its modules in order; named entries keep their names; Sequential(a, b) as PyTorch writes it works too", torch = "torch.nn.Sequential",
  example = "Sequential { Linear(8, 16), ReLU(), Linear(16, 4) }", input = { 8 } }
nn.doc.ModuleList = { summary = "a list of modules (indexed from 1 in Lua; PyTorch's names count from 0)",
  torch = "torch.nn.ModuleList", example = "ModuleList { Linear(8, 8), Linear(8, 8) }", input = { 8 },
  apply = "x = m.layer[1](x); return m.layer[2](x)" }
nn.doc.ModuleDict = { summary = "named modules", torch = "torch.nn.ModuleDict",
  example = "ModuleDict { encode = Linear(8, 4), decode = Linear(4, 8) }", input = { 8 },
  apply = "return m.layer.decode(m.layer.encode(x))" }

-- Sequential { a, b, name = c } (a table: named entries keep their names), or PyTorch's
-- nn.Sequential(a, b, c): the modules as arguments
function class.Sequential(items, ...)
  local where = diag.here()
  if nn.is_module(items) then
    items = table.pack(items, ...)
    for i = 1, items.n do
      if not nn.is_module(items[i]) then
        diag.fatal(where, string.format("Sequential: argument %d is not a module (got %s); Sequential(Linear(4, 8), ReLU()) "
          .. "or Sequential { Linear(4, 8), ReLU() }", i, tensor.is(items[i]) and "a tensor" or type(items[i])))
      end
    end
    items.n = nil
  elseif select("#", ...) > 0 or type(items) ~= "table" then
    diag.fatal(where, "Sequential takes modules, Sequential(Linear(4, 8), ReLU()), or one table of them: Sequential { Linear(4, 8), ReLU() }")
  end
  check_modules("Sequential", items)
  check_child_names("Sequential", items, where)
  local p, rec = module_list_from("Sequential", where, items)
  rec.call_text = "Sequential"
  for _, name in ipairs(named_in_order(items)) do add_child(rec, name, name, items[name]) end
  rec.forward = function(r, x, ...)
    local extra = select("#", ...)
    if extra > 0 then diag.fatal(nil, "Sequential takes one input") end
    for _, c in ipairs(r.children) do x = c.mod(x) end
    return x
  end
  return p
end

function class.ModuleList(items, ...)
  local where = diag.here()
  if select("#", ...) > 0 or type(items) ~= "table" or nn.is_module(items) then
    diag.fatal(where, "ModuleList takes one table of modules: ModuleList { Linear(4, 8), Linear(8, 8) }")
  end
  for k in pairs(items) do
    if math.type(k) ~= "integer" then diag.fatal(where, "ModuleList takes a list; use ModuleDict for named modules") end
  end
  check_modules("ModuleList", items)
  return (module_list_from("ModuleList", where, items))
end

function class.ModuleDict(items, ...)
  local where = diag.here()
  if select("#", ...) > 0 or type(items) ~= "table" or nn.is_module(items) then
    diag.fatal(where, "ModuleDict takes one table of named modules")
  end
  check_modules("ModuleDict", items)
  check_child_names("ModuleDict", items, where)
  local p, rec = new_module("ModuleDict", where)
  for _, name in ipairs(named_in_order(items)) do add_child(rec, name, name, items[name]) end
  return p
end

-- Parameter(d1, d2, ...): a model's own parameter, as `self.name = nn.Parameter(torch.zeros(d1,
-- d2, ...))` in a PyTorch __init__: named by its field, zeros until train.init sets it
-- (torch.nn.init's functions), in the state_dict before the submodules' tensors (as
-- PyTorch lists a module's own parameters first) and not in print(model).  Read in a
-- method as m.name, a tensor of that shape (no batch dimension).
local ParamDecl = { __name = "Parameter" }
function nn.is_param_decl(v) return getmetatable(v) == ParamDecl end
nn.doc.Parameter = { summary = "a model's own learnable tensor (zeros until train.init sets it), read as m.NAME; not printed, as PyTorch's",
  torch = "torch.nn.Parameter(torch.zeros(...))", example = "Parameter(1, 4)", input = { 4 }, apply = "return x + m.layer",
  signature = { { "*size", "posint", required = true } } }
function class.Parameter(...)
  local where = diag.here()
  local args = { ... }
  if type(args[1]) == "table" and #args == 1 and getmetatable(args[1]) == nil then args = args[1] end
  if #args == 0 then diag.fatal(where, "Parameter takes its sizes: Parameter(1, 1, 192), as nn.Parameter(torch.zeros(1, 1, 192))") end
  local shape = {}
  for i, d in ipairs(args) do
    if math.type(d) ~= "integer" or d <= 0 then
      diag.fatal(where, string.format("Parameter: size %d must be a positive integer, got %s", i,
        tensor.is(d) and "a tensor (give the sizes: Parameter(1, 1, 192) is nn.Parameter(torch.zeros(1, 1, 192)))" or tostring(d)))
    end
    shape[i] = d
  end
  creation_counter = creation_counter + 1
  return setmetatable({ shape = shape, where = where, seq = creation_counter }, ParamDecl)
end

local function is_module_table(v)
  if type(v) ~= "table" or nn.is_module(v) or tensor.is(v) or next(v) == nil then return false end
  for _, x in pairs(v) do if not nn.is_module(x) then return false end end
  return true
end

-- Builds a user-defined module (`model "Name" {...}` and `Module "Name" {...}`)
-- from its definition table: submodules (in creation order), methods, attributes.
-- `reserved` names fields that belong to the caller (e.g. `inputs`).
function nn.define(class_name, def, where, reserved)
  local p, rec = new_module(class_name, where, { call_text = class_name, param_by_name = {} })
  local named, own = {}, {}
  for k, v in pairs(def) do
    if reserved and reserved[k] then
      -- handled by the caller
    elseif type(k) ~= "string" then
      diag.error(where, string.format("%s: entry [%s] has no name; give every submodule a name", class_name, tostring(k)))
    elseif nn.is_module(v) then
      named[k] = v
    elseif is_module_table(v) then
      if #v > 0 then named[k] = class.ModuleList(v) else named[k] = class.ModuleDict(v) end
      records[named[k]].seq = math.huge  -- placed by its first member below
      local first = math.huge
      for _, x in pairs(v) do first = math.min(first, records[x].seq) end
      records[named[k]].seq = first
    elseif type(v) == "function" then
      rec.methods[k] = v
    elseif nn.is_param_decl(v) then
      own[#own + 1] = { name = k, decl = v }
    elseif tensor.is(v) then
      diag.error(where, string.format("%s.%s: a tensor cannot be a module field", class_name, k))
    else
      rec.attrs[k] = v
    end
  end
  check_child_names(class_name, named, where)
  for _, name in ipairs(named_in_order(named)) do add_child(rec, name, name, named[name]) end
  -- its own parameters in the order the spec made them (PyTorch: the order of assignment)
  table.sort(own, function(a, b) return a.decl.seq < b.decl.seq end)
  for _, o in ipairs(own) do
    if o.name:find(".", 1, true) or o.name:find("%c") then
      diag.error(diag.key_where(where, o.name), string.format("%s: the parameter name %s must not contain '.' or control characters",
        class_name, util.c_string(o.name)))
    end
    param(rec, o.name, o.decl.shape, { kind = "zeros" })
    rec.param_by_name[o.name] = rec.params[#rec.params]
  end
  return p, rec
end

---------------------------------------------------------------------------
-- PyTorch's print(model), character for character (torch.nn.Module.__repr__).

-- Appends the lines of `p`'s repr to `out`: the first is `pad .. head ..`, the
-- others start with `pad` (PyTorch's _addindent, applied once per line rather than
-- to each child's whole text at every level: deep nesting stays linear in the output).
local function repr_into(out, p, pad, head)
  local rec = records[p]
  local extra_lines = {}
  local extra = ""
  if rec.extra_repr then
    -- a module whose arguments were refused (the error is already reported) may
    -- lack what its repr reads: show the call as written instead of failing here
    local ok, text = pcall(rec.extra_repr, rec)
    extra = ok and text or ((rec.call_text or ""):match("^[%w_.]+%((.*)%)$") or "")
  end
  if extra ~= "" then
    for line in (extra .. "\n"):gmatch("(.-)\n") do extra_lines[#extra_lines + 1] = line end
  end
  local first = pad .. head .. rec.class .. "("
  if #extra_lines + #rec.children == 0 then out[#out + 1] = first .. ")"; return end
  if #extra_lines == 1 and #rec.children == 0 then out[#out + 1] = first .. extra_lines[1] .. ")"; return end
  out[#out + 1] = first
  local inner = pad .. "  "
  for _, l in ipairs(extra_lines) do out[#out + 1] = inner .. l end
  for _, c in ipairs(rec.children) do repr_into(out, c.mod, inner, "(" .. c.name .. "): ") end
  out[#out + 1] = pad .. ")"
end

function nn.repr(p)
  local out = {}
  repr_into(out, p, "", "")
  return table.concat(out, "\n")
end

---------------------------------------------------------------------------
-- state_dict order and names: a module's parameters, then its buffers, then
-- its children's, recursively.  A module reachable under two names (weight
-- sharing) is listed once, under the first, as named_parameters() does.

function nn.named_tensors(p)
  local params, buffers, seen = {}, {}, {}
  local order = {}
  local function walk(prefix, mp)
    local rec = records[mp]
    if seen[rec] then return end
    seen[rec] = prefix
    for _, prm in ipairs(rec.params) do
      local e = { name = prefix .. prm.name, shape = prm.shape, init = prm.init, module = rec, local_name = prm.name, kind = "param", dtype = "float" }
      params[#params + 1] = e; order[#order + 1] = e
    end
    for _, b in ipairs(rec.buffers) do
      local e = { name = prefix .. b.name, shape = b.shape, init = b.init, module = rec, local_name = b.name, kind = "buffer", dtype = b.dtype }
      buffers[#buffers + 1] = e; order[#order + 1] = e
    end
    for _, c in ipairs(rec.children) do walk(prefix .. c.name .. ".", c.mod) end
  end
  walk("", p)
  return params, buffers, order, seen
end

return nn
