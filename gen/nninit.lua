-- nninit: torch.nn.init's functions for the spec's own initialisation,
-- train { init = function(name, p) ... end }: one entry each, with PyTorch's
-- positional arguments and defaults (keywords in a trailing table), the checks torch
-- makes, its fan and gain rules, and the C expression that draws an element in
-- model_init (gen/host_c.lua; runtime/nninit.h has the draws).  The graph stage calls
-- the spec's function once per parameter, in named_parameters' order; a parameter
-- initialised twice keeps the last call, one never touched keeps PyTorch's default.
-- The values come from the run's seed (Philox, one stream per parameter), so a run is
-- reproducible; they are not torch's draws, the distributions are.
local diag = require "diag"
local util = require "util"

local nninit = {}
local lit = util.c_float

-- torch.nn.init.calculate_gain(nonlinearity, param)
local GAINS = { linear = 1, conv1d = 1, conv2d = 1, conv3d = 1, conv_transpose1d = 1, conv_transpose2d = 1,
                conv_transpose3d = 1, sigmoid = 1, tanh = 5 / 3, relu = math.sqrt(2), selu = 3 / 4 }
local function gain_of(fname, nonlinearity, param, where)
  if nonlinearity == "leaky_relu" then
    local slope = param == nil and 0.01 or param
    if type(slope) ~= "number" then
      diag.fatal(where, string.format("%s: negative_slope %s is not a valid number", fname, tostring(param)))
    end
    return math.sqrt(2 / (1 + slope * slope))
  end
  local g = GAINS[nonlinearity]
  if not g then
    local names = util.sorted_keys(GAINS)
    names[#names + 1] = "leaky_relu"
    table.sort(names)
    diag.fatal(where, string.format("%s: unsupported nonlinearity %s (torch's: %s)%s", fname,
      type(nonlinearity) == "string" and ("'" .. nonlinearity .. "'") or tostring(nonlinearity), table.concat(names, ", "),
      type(nonlinearity) == "string" and util.did_you_mean(nonlinearity, names) or ""))
  end
  return g
end

-- torch.nn.init._calculate_fan_in_and_fan_out
local function fans(fname, p, where)
  local s = p.shape
  if #s < 2 then
    diag.fatal(where, string.format("%s(%s): fan in and fan out cannot be computed for a tensor of %d dimension%s %s "
      .. "(torch raises the same); it needs 2 or more", fname, p.name, #s, #s == 1 and "" or "s", util.shape_str(s)))
  end
  local rf = 1
  for i = 3, #s do rf = rf * s[i] end
  return s[2] * rf, s[1] * rf
end

local function fan_of(fname, p, mode, where)
  local fan_in, fan_out = fans(fname, p, where)
  if mode == "fan_in" then return fan_in end
  if mode == "fan_out" then return fan_out end
  diag.fatal(where, string.format("%s: mode %s is not supported; use 'fan_in' or 'fan_out'", fname, tostring(mode)))
end

local NUM, STR = "number", "string"

-- Each rule: `args` (torch's arguments after the tensor: name, type, default),
-- `summary`, `example`, and `draw(a, p, where)`, which returns { expr = C of one
-- element (double, `i` its index, `seed`/`stream` the Philox key), desc } or
-- { orthogonal = true, gain }.
nninit.RULES = {
  normal_ = {
    args = { { "mean", NUM, 0.0 }, { "std", NUM, 1.0 } },
    summary = "fills the parameter with N(mean, std²)", example = 'if name:match("weight$") then normal_(p, 0, 0.02) end',
    draw = function(a)
      return { expr = string.format("%s + %s * nninit_normal(seed, stream, i)", lit(a.mean), lit(a.std)) }
    end,
  },
  uniform_ = {
    args = { { "a", NUM, 0.0 }, { "b", NUM, 1.0 } },
    summary = "fills the parameter with U(a, b)", example = "uniform_(p, -0.1, 0.1)",
    draw = function(a)
      return { expr = string.format("%s + %s * nninit_uniform(seed, stream, i)", lit(a.a), lit(a.b - a.a)) }
    end,
  },
  constant_ = {
    args = { { "val", NUM } },
    summary = "fills the parameter with val", example = 'if name:match("bias$") then constant_(p, 0.1) end',
    draw = function(a) return { expr = lit(a.val) } end,
  },
  zeros_ = {
    args = {}, summary = "fills the parameter with 0", example = 'if name:match("bias$") then zeros_(p) end',
    draw = function() return { expr = "0.0" } end,
  },
  ones_ = {
    args = {}, summary = "fills the parameter with 1", example = 'if p:dim() == 1 then ones_(p) end',
    draw = function() return { expr = "1.0" } end,
  },
  xavier_uniform_ = {
    args = { { "gain", NUM, 1.0 } },
    summary = "U(-b, b), b = gain·√(6 / (fan_in + fan_out)) (Glorot)",
    example = 'if p:dim() >= 2 then xavier_uniform_(p, calculate_gain("relu")) end',
    draw = function(a, p, where)
      local fan_in, fan_out = fans("xavier_uniform_", p, where)
      local bound = math.sqrt(3.0) * a.gain * math.sqrt(2.0 / (fan_in + fan_out))
      return { expr = string.format("%s * (2.0 * nninit_uniform(seed, stream, i) - 1.0)", lit(bound)),
               note = string.format("fan_in %d, fan_out %d", fan_in, fan_out) }
    end,
  },
  xavier_normal_ = {
    args = { { "gain", NUM, 1.0 } },
    summary = "N(0, std²), std = gain·√(2 / (fan_in + fan_out)) (Glorot)",
    example = "if p:dim() >= 2 then xavier_normal_(p) end",
    draw = function(a, p, where)
      local fan_in, fan_out = fans("xavier_normal_", p, where)
      local std = a.gain * math.sqrt(2.0 / (fan_in + fan_out))
      return { expr = string.format("%s * nninit_normal(seed, stream, i)", lit(std)),
               note = string.format("fan_in %d, fan_out %d", fan_in, fan_out) }
    end,
  },
  kaiming_uniform_ = {
    args = { { "a", NUM, 0.0 }, { "mode", STR, "fan_in" }, { "nonlinearity", STR, "leaky_relu" } },
    summary = "U(-b, b), b = gain·√(3 / fan), fan by mode, gain by nonlinearity and a (He)",
    example = 'if p:dim() >= 2 then kaiming_uniform_(p, { mode = "fan_out", nonlinearity = "relu" }) end',
    draw = function(a, p, where)
      local fan = fan_of("kaiming_uniform_", p, a.mode, where)
      local bound = math.sqrt(3.0) * gain_of("kaiming_uniform_", a.nonlinearity, a.a, where) / math.sqrt(fan)
      return { expr = string.format("%s * (2.0 * nninit_uniform(seed, stream, i) - 1.0)", lit(bound)),
               note = string.format("%s %d", a.mode, fan) }
    end,
  },
  kaiming_normal_ = {
    args = { { "a", NUM, 0.0 }, { "mode", STR, "fan_in" }, { "nonlinearity", STR, "leaky_relu" } },
    summary = "N(0, std²), std = gain / √fan, fan by mode, gain by nonlinearity and a (He)",
    example = 'if p:dim() >= 2 then kaiming_normal_(p, { mode = "fan_out", nonlinearity = "relu" }) end',
    draw = function(a, p, where)
      local fan = fan_of("kaiming_normal_", p, a.mode, where)
      local std = gain_of("kaiming_normal_", a.nonlinearity, a.a, where) / math.sqrt(fan)
      return { expr = string.format("%s * nninit_normal(seed, stream, i)", lit(std)),
               note = string.format("%s %d", a.mode, fan) }
    end,
  },
  trunc_normal_ = {
    args = { { "mean", NUM, 0.0 }, { "std", NUM, 1.0 }, { "a", NUM, -2.0 }, { "b", NUM, 2.0 } },
    summary = "N(mean, std²) truncated to [a, b] (by the inverse CDF, as torch)",
    example = 'if p:dim() >= 2 then trunc_normal_(p, 0, 0.02, -0.04, 0.04) end',
    draw = function(a, _, where)
      if not (a.b > a.a) then diag.fatal(where, string.format("trunc_normal_: a (%s) must be below b (%s)", lit(a.a), lit(a.b))) end
      if not (a.std > 0) then diag.fatal(where, string.format("trunc_normal_: std must be positive, got %s", lit(a.std))) end
      return { expr = string.format("nninit_trunc_normal(seed, stream, i, %s, %s, %s, %s)", lit(a.mean), lit(a.std),
        lit(a.a), lit(a.b)) }
    end,
  },
  orthogonal_ = {
    args = { { "gain", NUM, 1.0 } },
    summary = "a (semi-)orthogonal matrix (rows × the other dimensions' product), times gain: Q of a normal matrix's QR",
    example = 'if name:match("weight$") then orthogonal_(p) end',
    draw = function(a, p, where)
      if #p.shape < 2 then
        diag.fatal(where, string.format("orthogonal_(%s): only tensors with 2 or more dimensions are supported "
          .. "(torch raises the same); it has %d", p.name, #p.shape))
      end
      return { orthogonal = true, gain = a.gain, rows = p.shape[1], cols = util.numel(p.shape) // p.shape[1] }
    end,
  },
}
-- the order torch's docs list them
nninit.NAMES = { "uniform_", "normal_", "constant_", "ones_", "zeros_", "xavier_uniform_", "xavier_normal_",
                 "kaiming_uniform_", "kaiming_normal_", "trunc_normal_", "orthogonal_" }

-- A parameter as the spec's init function sees it: its name, shape, dim(), size(d), numel().
local Param = { __name = "Parameter" }
local PARAM_KEYS = { name = true, shape = true, dim = true, size = true, numel = true }
Param.__index = function(p, k)
  local e = rawget(p, "_entry")
  if k == "name" then return e.name end
  if k == "shape" then return { table.unpack(e.shape) } end
  if k == "dim" then return function() return #e.shape end end
  if k == "numel" then return function() return util.numel(e.shape) end end
  if k == "size" then
    return function(_, d)
      if d == nil then return { table.unpack(e.shape) } end
      if math.type(d) ~= "integer" or d < -#e.shape or d >= #e.shape then
        diag.fatal(nil, string.format("%s:size(%s): dimension out of range (0-based, as torch: -%d to %d)", e.name,
          tostring(d), #e.shape, #e.shape - 1))
      end
      return e.shape[d < 0 and #e.shape + d + 1 or d + 1]
    end
  end
  diag.fatal(nil, string.format("a parameter has no field '%s'%s; it has name, shape, dim(), size(d), numel()",
    tostring(k), util.did_you_mean(tostring(k), util.sorted_keys(PARAM_KEYS))))
end
Param.__newindex = function(p, k)
  diag.fatal(nil, string.format("cannot assign '%s' on parameter %s: change it with the init functions (normal_, ...)",
    tostring(k), rawget(p, "_entry").name))
end
Param.__tostring = function(p) return "Parameter " .. rawget(p, "_entry").name end

local recording = nil   -- name -> the init recorded for it, while the spec's init runs

-- Arguments after the tensor: torch's positional ones, then an optional table of
-- keywords (kaiming_normal_(p, { mode = "fan_out" })).
local function parse_args(fname, rule, where, ...)
  local n = select("#", ...)
  local args = { ... }
  local kw
  if n > 0 and type(args[n]) == "table" and getmetatable(args[n]) == nil then
    kw = args[n]
    n = n - 1
  end
  if n > #rule.args then
    diag.fatal(where, string.format("%s takes at most %d argument%s after the parameter, got %d", fname, #rule.args,
      #rule.args == 1 and "" or "s", n))
  end
  local out = {}
  local function set(spec_, v, how)
    if v ~= nil and type(v) ~= spec_[2] then
      diag.fatal(where, string.format("%s: %s must be a %s, got %s", fname, how, spec_[2], type(v) == "string" and ("'" .. v .. "'") or tostring(v)))
    end
    out[spec_[1]] = v
  end
  for i = 1, n do set(rule.args[i], args[i], rule.args[i][1]) end
  if kw then
    local known = {}
    for i, s in ipairs(rule.args) do known[s[1]] = i end
    for k, v in pairs(kw) do
      local i = known[k]
      if not i then
        local names = {}
        for _, s in ipairs(rule.args) do names[#names + 1] = s[1] end
        diag.fatal(where, string.format("%s has no argument '%s'%s%s", fname, tostring(k),
          type(k) == "string" and util.did_you_mean(k, names) or "",
          #names > 0 and ("; it takes " .. table.concat(names, ", ")) or "; it takes only the parameter"))
      end
      if i <= n then diag.fatal(where, string.format("%s: '%s' is given twice (by position and by name)", fname, k)) end
      set(rule.args[i], v, k)
    end
  end
  for _, s in ipairs(rule.args) do
    if out[s[1]] == nil then
      if s[3] == nil then diag.fatal(where, string.format("%s: '%s' is required: %s(p, %s)", fname, s[1], fname, s[1])) end
      out[s[1]] = s[3]
    end
  end
  return out
end

-- The DSL's functions: { name = function } (the init functions and calculate_gain).
function nninit.functions()
  local fns = {}
  for _, fname in ipairs(nninit.NAMES) do
    local rule = nninit.RULES[fname]
    fns[fname] = function(p, ...)
      local where = diag.here()
      if getmetatable(p) ~= Param then
        diag.fatal(where, string.format("%s takes a parameter first: the p of train { init = function(name, p) ... end }, got %s",
          fname, type(p) == "table" and "a table" or tostring(p)))
      end
      if not recording then
        diag.fatal(where, string.format("%s is called outside train.init's function", fname))
      end
      local a = parse_args(fname, rule, where, ...)
      local e = rawget(p, "_entry")
      local d = rule.draw(a, e, where)
      local shown = {}
      for _, s in ipairs(rule.args) do
        local v = a[s[1]]
        shown[#shown + 1] = s[1] .. "=" .. (type(v) == "string" and ("'" .. v .. "'") or lit(v))
      end
      d.call = string.format("%s(%s)", fname, table.concat(shown, ", "))
      d.where = where
      d.kind = fname
      recording[e.name] = d
      return p
    end
  end
  fns.calculate_gain = function(nonlinearity, param)
    return gain_of("calculate_gain", nonlinearity, param, diag.here())
  end
  return fns
end

nninit.DOC_CALLS = {}
for _, fname in ipairs(nninit.NAMES) do
  local parts = { "tensor" }
  for _, s in ipairs(nninit.RULES[fname].args) do
    parts[#parts + 1] = s[3] == nil and s[1] or (s[1] .. "=" .. (type(s[3]) == "string" and ("'" .. s[3] .. "'") or tostring(s[3])))
  end
  nninit.DOC_CALLS[fname] = fname .. "(" .. table.concat(parts, ", ") .. ")"
end

-- Runs the spec's init function over the parameters `params` (the graph's, in
-- named_parameters' order); returns { [param name] = the draw it recorded }.
-- `run(fn, ...)` calls spec code with the spec's message handler.
function nninit.run(fn, params, run)
  local inits = {}
  recording = inits
  local ok, err = pcall(function()
    for _, e in ipairs(params) do
      run(fn, e.name, setmetatable({ _entry = e }, Param))
    end
  end)
  recording = nil
  if not ok then error(err, 0) end
  return inits
end

return nninit
