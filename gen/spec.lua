-- spec: runs a spec file in a sandbox that exposes only the DSL, and returns
-- what it declared: the model (a module proxy with its inputs and methods), the
-- Fabric settings and the training setup, each value validated and each
-- carrying the spec line it was written on.
local diag = require "diag"
local util = require "util"
local nn = require "nn"
local tensor = require "tensor"
local nninit = require "nninit"
local lr_lambda = require "lr_lambda"

local spec = {}

---------------------------------------------------------------------------
-- Validation of settings tables (fabric, train, optimizers, ...).

local checkers = {}

-- A value as a message shows it: 'text', 3, {0.9, 1.5}, a function, a module.
local function show(v, depth)
  local t = type(v)
  if t == "string" then return "'" .. v .. "'" end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  if t ~= "table" then return "a " .. t end
  if nn.is_module(v) then return "a module (" .. (nn.record(v).call_text or nn.record(v).class) .. ")" end
  if tensor.is(v) then return "a tensor" end
  local mt = getmetatable(v)
  if mt and mt.__name == "TensorDecl" then return "a Tensor{...} declaration" end
  if mt and mt.__name == "Setting" then return "a " .. v.kind .. " { ... }" end
  if mt then return "a table" end
  local n, count = #v, 0
  for _ in pairs(v) do count = count + 1 end
  if count == 0 then return "an empty table" end
  if count ~= n or n > 8 or (depth or 0) > 1 then return "a table" end
  local parts = {}
  for i = 1, n do parts[i] = show(v[i], (depth or 0) + 1) end
  return "{" .. table.concat(parts, ", ") .. "}"
end
spec.show = show

local function fail(what, want, v)
  return nil, string.format("%s must be %s, got %s", what, want, show(v))
end
function checkers.number(v, what) if type(v) == "number" then return v + 0.0 end return fail(what, "a number", v) end
function checkers.nonneg(v, what) if type(v) == "number" and v >= 0 then return v + 0.0 end return fail(what, "a non-negative number", v) end
function checkers.posnumber(v, what) if type(v) == "number" and v > 0 then return v + 0.0 end return fail(what, "a positive number", v) end
function checkers.prob(v, what) if type(v) == "number" and v >= 0 and v <= 1 then return v + 0.0 end return fail(what, "a number in [0, 1]", v) end
function checkers.int(v, what) if math.type(v) == "integer" then return v end return fail(what, "an integer", v) end
function checkers.posint(v, what) if math.type(v) == "integer" and v > 0 then return v end return fail(what, "a positive integer", v) end
function checkers.nonnegint(v, what) if math.type(v) == "integer" and v >= 0 then return v end return fail(what, "a non-negative integer", v) end
function checkers.bool(v, what) if type(v) == "boolean" then return v end return fail(what, "true or false", v) end
function checkers.string(v, what) if type(v) == "string" then return v end return fail(what, "a string", v) end
function checkers.func(v, what) if type(v) == "function" then return v end return fail(what, "a function", v) end
function checkers.betas(v, what)
  if type(v) == "table" and #v == 2 and type(v[1]) == "number" and type(v[2]) == "number"
     and v[1] >= 0 and v[1] < 1 and v[2] >= 0 and v[2] < 1 then
    return { v[1] + 0.0, v[2] + 0.0 }
  end
  return fail(what, "a pair of numbers in [0, 1), e.g. {0.9, 0.999}", v)
end
local function enum(...)
  local allowed = { ... }
  return function(v, what)
    for _, a in ipairs(allowed) do if v == a then return v end end
    local quoted = {}
    for i, a in ipairs(allowed) do quoted[i] = "'" .. a .. "'" end
    local hint = type(v) == "string" and util.did_you_mean(v, allowed) or ""
    local r, msg = fail(what, "one of " .. table.concat(quoted, ", "), v)
    return r, msg .. hint
  end
end

-- Values made by the DSL's settings constructors (AdamW{...}, EarlyStopping{...}).
local Setting = { __name = "Setting" }
local function is_setting(v, family)
  return getmetatable(v) == Setting and (family == nil or v.family == family)
end
local settings = {}
local NOUNS = { optimizer = "an optimizer", scheduler = "a scheduler", callback = "a callback",
                logger = "a logger", data = "a data source", hooks = "the user's hooks" }
local function one_of(family)
  return NOUNS[family] .. " (" .. table.concat(spec.families[family], ", ") .. ")"
end
-- `optimizer = AdamW` (the constructor itself, not called): say how to call it.
local function uncalled(v, what)
  for name, ctor in pairs(settings) do
    if v == ctor then
      return nil, string.format("%s is %s itself, not called: write %s { ... }", what, name, name)
    end
  end
  return nil
end
local function setting_of(family)
  return function(v, what)
    if is_setting(v, family) then return v end
    local r, msg = uncalled(v, what)
    if msg then return r, msg end
    return fail(what, one_of(family), v)
  end
end
local function list_of(family)
  return function(v, what)
    if is_setting(v, family) then return { v } end
    if type(v) ~= "table" or getmetatable(v) ~= nil then
      return fail(what, "a list of " .. family .. "s", v)
    end
    local out, n = {}, 0
    for _ in pairs(v) do n = n + 1 end
    for i = 1, n do
      local x = v[i]
      if not is_setting(x, family) then
        local r, msg = uncalled(x, string.format("%s[%d]", what, i))
        if msg then return r, msg end
        return fail(string.format("%s[%d]", what, i), one_of(family), x)
      end
      out[i] = x
    end
    return out
  end
end

-- Settings of Lightning's Trainer and Fabric that loom spells otherwise or takes
-- elsewhere, by the block they were written in: the answer names loom's setting.
local FOREIGN_SETTINGS = {
  train = {
    accumulate_grad_batches = "Lightning's name; loom's is accumulate (train { accumulate = N })",
    max_epochs = "Lightning's name; loom's is epochs (train { epochs = N })",
    gradient_clip_val = "Lightning's name; loom writes clip = { max_norm = V } (clip by norm, Lightning's default) "
      .. "or clip = { clip_val = V } (by value)",
    gradient_clip_algorithm = "Lightning's name; loom's clip says the algorithm: clip = { max_norm = V } ('norm') "
      .. "or clip = { clip_val = V } ('value')",
    check_val_every_n_epoch = "Lightning's name; loom's is val_every (train { val_every = N })",
    logger = "Lightning's name; loom's is loggers, a list: loggers = { CSVLogger {} }",
    lr = "the optimizer's setting: optimizer = AdamW { lr = 1e-3 }",
    learning_rate = "not a loom setting; the learning rate is the optimizer's lr: optimizer = AdamW { lr = 1e-3 }",
    precision = "a Fabric setting; write it in fabric { precision = ... }",
    accelerator = "a Fabric setting; write it in fabric { accelerator = ... }",
    devices = "a Fabric setting; write it in fabric { devices = ... }",
    strategy = "a Fabric setting; write it in fabric { strategy = ... }",
    num_nodes = "a Fabric setting; write it in fabric { num_nodes = ... }",
  },
  fabric = {
    gpus = "Lightning 1.x's name; loom's is devices, with accelerator = 'gpu' (fabric { accelerator = 'gpu', devices = N })",
    callbacks = "a training setting in loom; write it in train { callbacks = { ... } }",
    loggers = "a training setting in loom; write it in train { loggers = { ... } }",
    plugins = "a Fabric argument loom does not support; precision and strategy are fabric settings",
  },
}
for _, k in ipairs { "batch_size", "epochs", "max_epochs", "max_steps", "accumulate", "accumulate_grad_batches",
                     "seed", "optimizer", "loss", "data" } do
  FOREIGN_SETTINGS.fabric[k] = "a training setting; write it in train { ... } (loom help train)"
end

-- The message for an unknown setting `k` of `owner` (its valid settings: `names`).
function spec.unknown_setting(owner, k, names)
  local foreign = FOREIGN_SETTINGS[owner] and FOREIGN_SETTINGS[owner][k]
  if foreign then return string.format("%s: '%s' is %s", owner, k, foreign) end
  return string.format("%s: unknown setting '%s'%s; valid settings: %s", owner, k, util.did_you_mean(k, names),
    table.concat(names, ", "))
end

-- Checks `t` against `schema` ({ key = {checker, default, required = bool}, ... }).
-- Returns the checked settings and how many errors it reported.
local function validate(owner, t, schema, where)
  local out, errors = {}, 0
  if type(t) ~= "table" or getmetatable(t) ~= nil then
    diag.error(where, string.format("%s takes a table of settings: %s { ... }, got %s", owner, owner, show(t)))
    return out, 1
  end
  local names = util.sorted_keys(schema)
  for k, v in pairs(t) do
    if type(k) ~= "string" then
      errors = errors + 1
      diag.error(where, string.format("%s: settings are named (key = value), got a value without a name: %s",
        owner, show(v)))
    elseif not schema[k] then
      errors = errors + 1
      diag.error(diag.key_where(where, k), spec.unknown_setting(owner, k, names))
    else
      local r, msg = schema[k][1](v, owner .. "." .. k)
      if msg then
        errors = errors + 1
        diag.error(diag.key_where(where, k), msg)
      else
        out[k] = r
      end
    end
  end
  for _, k in ipairs(names) do
    local s = schema[k]
    if out[k] == nil then
      if s.required and t[k] == nil then
        errors = errors + 1
        diag.error(where, string.format("%s: '%s' is required", owner, k))
      elseif t[k] == nil then
        out[k] = s[2]
      end
    end
  end
  return out, errors
end

---------------------------------------------------------------------------
-- Settings constructors: optimizers, schedulers, callbacks, loggers, data.
-- Defaults are PyTorch's / Lightning's.

spec.families = {}
-- The reference entries of the DSL's settings constructors and blocks (gen/docs.lua
-- renders them): a one-line summary, the PyTorch/Lightning counterpart, an example
-- the docs suite builds, and the schema (a setting's `doc` says what it does where
-- the name alone does not).
spec.doc = {}
local function define_setting(family, name, doc, schema, check)
  spec.doc[name] = { kind = family, summary = doc[1], torch = doc.torch, example = doc.example, schema = schema }
  spec.families[family] = spec.families[family] or {}
  table.insert(spec.families[family], name)
  table.sort(spec.families[family])
  settings[name] = function(t, ...)
    local where = diag.here()
    if select("#", ...) > 0 then
      diag.error(where, string.format("%s takes one table of settings: %s { ... }", name, name))
    end
    local args, errors = validate(name, t or {}, schema, where)
    if check and errors == 0 then check(args, where) end
    return setmetatable({ family = family, kind = name, args = args, where = where }, Setting)
  end
end

-- An optimizer's parameter groups (torch.optim's param_groups), by name: a list of
-- { params = "Lua pattern", lr = ..., weight_decay = ... }; a parameter is in the first
-- group whose pattern its name (PyTorch's, e.g. "fc1.bias") matches, else in the
-- optimizer's own group.
local GROUP_KEYS = { params = checkers.string, lr = checkers.nonneg, weight_decay = checkers.nonneg }
function checkers.groups(v, what)
  if type(v) ~= "table" or getmetatable(v) ~= nil then
    return fail(what, 'a list of groups, e.g. { { params = "%.bias$", weight_decay = 0 } }', v)
  end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  local out = {}
  for i = 1, n do
    local gw = string.format("%s[%d]", what, i)
    local g = v[i]
    if type(g) ~= "table" or getmetatable(g) ~= nil then
      return fail(gw, 'a group { params = "pattern", lr = ..., weight_decay = ... }', g)
    end
    local r = {}
    for k, x in pairs(g) do
      local check = GROUP_KEYS[k]
      if not check then
        return nil, string.format("%s: unknown setting '%s'%s; a group takes params, lr and weight_decay", gw,
          tostring(k), type(k) == "string" and util.did_you_mean(k, util.sorted_keys(GROUP_KEYS)) or "")
      end
      local val, msg = check(x, gw .. "." .. k)
      if msg then return nil, msg end
      r[k] = val
    end
    if not r.params then return nil, string.format("%s: 'params' (a Lua pattern of parameter names) is required", gw) end
    local ok, err = pcall(string.find, "", r.params)
    if not ok then
      return nil, string.format("%s.params: '%s' is not a Lua pattern: %s", gw, r.params, tostring(err):gsub("^.-:%d+: ", ""))
    end
    out[i] = r
  end
  if #out == 0 then return fail(what, "a non-empty list of groups", v) end
  return out
end
local GROUPS_DOC = "parameter groups: { { params = \"Lua pattern\", lr = ..., weight_decay = ... }, ... }; "
  .. "a parameter is in the first group its name matches, else in the optimizer's own"

define_setting("optimizer", "SGD", { "stochastic gradient descent, with momentum, dampening, Nesterov and weight decay",
  torch = "torch.optim.SGD", example = "SGD { lr = 0.1, momentum = 0.9, nesterov = true }" }, {
  lr = { checkers.nonneg, 1e-3 }, momentum = { checkers.nonneg, 0.0 }, dampening = { checkers.number, 0.0 },
  weight_decay = { checkers.nonneg, 0.0 }, nesterov = { checkers.bool, false }, maximize = { checkers.bool, false },
  groups = { checkers.groups, nil, doc = GROUPS_DOC },
}, function(a, where)
  if a.nesterov and (a.momentum <= 0 or a.dampening ~= 0) then
    diag.error(where, "SGD: Nesterov momentum requires a momentum and zero dampening")
  end
end)
for _, name in ipairs { "Adam", "AdamW" } do
  define_setting("optimizer", name, { name == "Adam" and "Adam (weight decay added to the gradient)"
      or "Adam with decoupled weight decay", torch = "torch.optim." .. name,
      example = name .. " { lr = 3e-4, betas = {0.9, 0.95} }" }, {
    lr = { checkers.nonneg, 1e-3 }, betas = { checkers.betas, { 0.9, 0.999 } }, eps = { checkers.nonneg, 1e-8 },
    weight_decay = { checkers.nonneg, name == "AdamW" and 1e-2 or 0.0 }, amsgrad = { checkers.bool, false },
    maximize = { checkers.bool, false },
    -- AdamW's two parameter groups, as nanoGPT and llm.c make them: weight decay only on
    -- the parameters with at least this many dimensions (2: the matrices and embeddings,
    -- not biases or LayerNorm's); 0: on every parameter (torch.optim's single group)
    decay_min_ndim = name == "AdamW" and { checkers.nonnegint, 0 } or nil,
    groups = { checkers.groups, nil, doc = GROUPS_DOC },
  }, function(a, where)
    if a.groups and (a.decay_min_ndim or 0) > 0 then
      diag.error(where, name .. ": give groups or decay_min_ndim, not both (a group { params = ..., weight_decay = 0 } "
        .. "is decay_min_ndim's undecayed group)")
    end
  end)
end
define_setting("optimizer", "RMSprop", { "divides the gradient by a running root mean square (centered: minus its mean), with momentum",
  torch = "torch.optim.RMSprop", example = "RMSprop { lr = 1e-3, alpha = 0.9, momentum = 0.9, centered = true }" }, {
  lr = { checkers.nonneg, 1e-2 }, alpha = { checkers.nonneg, 0.99 }, eps = { checkers.nonneg, 1e-8 },
  weight_decay = { checkers.nonneg, 0.0 }, momentum = { checkers.nonneg, 0.0 }, centered = { checkers.bool, false },
  maximize = { checkers.bool, false }, groups = { checkers.groups, nil, doc = GROUPS_DOC },
})
define_setting("optimizer", "Adagrad", { "divides each step by the root of the summed squared gradients",
  torch = "torch.optim.Adagrad", example = "Adagrad { lr = 0.05, lr_decay = 1e-4, initial_accumulator_value = 0.1 }" }, {
  lr = { checkers.nonneg, 1e-2 }, lr_decay = { checkers.nonneg, 0.0 }, weight_decay = { checkers.nonneg, 0.0 },
  initial_accumulator_value = { checkers.nonneg, 0.0 }, eps = { checkers.nonneg, 1e-10 },
  maximize = { checkers.bool, false }, groups = { checkers.groups, nil, doc = GROUPS_DOC },
})
define_setting("optimizer", "Adamax", { "Adam with the infinity norm in place of the second moment",
  torch = "torch.optim.Adamax", example = "Adamax { lr = 2e-3, betas = {0.9, 0.999} }" }, {
  lr = { checkers.nonneg, 2e-3 }, betas = { checkers.betas, { 0.9, 0.999 } }, eps = { checkers.nonneg, 1e-8 },
  weight_decay = { checkers.nonneg, 0.0 }, maximize = { checkers.bool, false },
  groups = { checkers.groups, nil, doc = GROUPS_DOC },
})
define_setting("optimizer", "NAdam", { "Adam with Nesterov momentum (PyTorch 2.0's update: 1.13 double-counts mu in mu_product_next)",
  torch = "torch.optim.NAdam", example = "NAdam { lr = 2e-3, momentum_decay = 4e-3 }" }, {
  lr = { checkers.nonneg, 2e-3 }, betas = { checkers.betas, { 0.9, 0.999 } }, eps = { checkers.nonneg, 1e-8 },
  weight_decay = { checkers.nonneg, 0.0 }, momentum_decay = { checkers.nonneg, 4e-3 },
  groups = { checkers.groups, nil, doc = GROUPS_DOC },
})
define_setting("optimizer", "RAdam", { "Adam with the variance of the adaptive lr rectified (plain momentum SGD for the first steps)",
  torch = "torch.optim.RAdam", example = "RAdam { lr = 1e-3, weight_decay = 1e-4 }" }, {
  lr = { checkers.nonneg, 1e-3 }, betas = { checkers.betas, { 0.9, 0.999 } }, eps = { checkers.nonneg, 1e-8 },
  weight_decay = { checkers.nonneg, 0.0 }, groups = { checkers.groups, nil, doc = GROUPS_DOC },
})

define_setting("scheduler", "StepLR", { "multiplies the learning rate by gamma every step_size epochs (or steps)",
  torch = "torch.optim.lr_scheduler.StepLR", example = "StepLR { step_size = 10, gamma = 0.5 }" }, {
  step_size = { checkers.posint, nil, required = true }, gamma = { checkers.number, 0.1 },
  interval = { enum("epoch", "step"), "epoch", doc = "step per 'epoch' or per optimizer 'step' (Lightning's interval)" },
})
local INTERVAL = { enum("epoch", "step"), "epoch", doc = "step per 'epoch' or per optimizer 'step' (Lightning's interval)" }
define_setting("scheduler", "ExponentialLR", { "multiplies the learning rate by gamma every epoch (or step)",
  torch = "torch.optim.lr_scheduler.ExponentialLR", example = "ExponentialLR { gamma = 0.95 }" }, {
  gamma = { checkers.nonneg, nil, required = true }, interval = INTERVAL,
})
local function milestones(v, what)
  if type(v) == "table" and getmetatable(v) == nil and #v > 0 then
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    local ok = n == #v
    for i = 1, #v do ok = ok and math.type(v[i]) == "integer" and v[i] > 0 and (i == 1 or v[i] > v[i - 1]) end
    if ok then return v end
  end
  return fail(what, "a list of increasing positive integers, e.g. {30, 80}", v)
end
define_setting("scheduler", "MultiStepLR", { "multiplies the learning rate by gamma at each milestone epoch (or step)",
  torch = "torch.optim.lr_scheduler.MultiStepLR", example = "MultiStepLR { milestones = {30, 80}, gamma = 0.1 }" }, {
  milestones = { milestones, nil, required = true }, gamma = { checkers.nonneg, 0.1 }, interval = INTERVAL,
})
define_setting("scheduler", "LinearLR", { "scales the learning rate linearly from start_factor to end_factor over total_iters",
  torch = "torch.optim.lr_scheduler.LinearLR", example = "LinearLR { start_factor = 0.1, total_iters = 100, interval = 'step' }" }, {
  start_factor = { checkers.posnumber, 1.0 / 3 }, end_factor = { checkers.prob, 1.0 },
  total_iters = { checkers.posint, 5 }, interval = INTERVAL,
}, function(a, where)
  if a.start_factor > 1 then diag.error(diag.key_where(where, "start_factor"), "LinearLR.start_factor must be in (0, 1], as torch's") end
end)
define_setting("scheduler", "CosineAnnealingLR", { "cosine from lr down to eta_min over T_max epochs (or steps), and back up after",
  torch = "torch.optim.lr_scheduler.CosineAnnealingLR", example = "CosineAnnealingLR { T_max = 50, eta_min = 1e-5 }" }, {
  T_max = { checkers.posint, nil, required = true }, eta_min = { checkers.nonneg, 0.0 }, interval = INTERVAL,
})
define_setting("scheduler", "WarmupCosine", { "linear warm-up from 0 to lr, then cosine decay to min_lr, per step",
  torch = "LinearLR + CosineAnnealingLR in a SequentialLR (as in nanoGPT)",
  example = "WarmupCosine { warmup_steps = 100, total_steps = 2000, min_lr = 1e-5 }" }, {
  warmup_steps = { checkers.nonnegint, 0 },
  total_steps = { checkers.posint, nil, doc = "default: the run's steps (epochs × steps per epoch, or max_steps)" },
  min_lr = { checkers.nonneg, 0.0 },
})
define_setting("scheduler", "OneCycleLR", { "the 1cycle policy, per step", torch = "torch.optim.lr_scheduler.OneCycleLR",
  example = "OneCycleLR { max_lr = 0.01, pct_start = 0.25 }" }, {
  max_lr = { checkers.posnumber, nil, required = true },
  total_steps = { checkers.posint, nil, doc = "default: the run's steps" },
  pct_start = { checkers.prob, 0.3 }, anneal_strategy = { enum("cos", "linear"), "cos" },
  div_factor = { checkers.posnumber, 25.0 }, final_div_factor = { checkers.posnumber, 1e4 },
  three_phase = { checkers.bool, false }, cycle_momentum = { checkers.bool, true },
  base_momentum = { checkers.prob, 0.85 }, max_momentum = { checkers.prob, 0.95 },
})

define_setting("scheduler", "LambdaLR", { "the initial lr times lr_lambda, a Lua expression of the epoch (or step) count, compiled to C",
  torch = "torch.optim.lr_scheduler.LambdaLR", example = 'LambdaLR { lr_lambda = "epoch < 3 and (epoch + 1) / 3 or 0.9 ^ (epoch - 3)" }' }, {
  lr_lambda = { checkers.string, nil, required = true, doc = "the factor as a Lua expression of `epoch` (interval 'epoch') or `step` "
    .. "(interval 'step'), counted from 0: numbers, + - * / // % ^, comparisons, and/or/not, math.abs/ceil/cos/exp/floor/fmod/log/max/min/sin/sqrt/tan/pi" },
  interval = INTERVAL,
}, function(a, where)
  local _, why = lr_lambda.parse(a.lr_lambda, a.interval)
  if why then diag.error(diag.key_where(where, "lr_lambda"), string.format("LambdaLR.lr_lambda %s: %s", util.c_string(a.lr_lambda), why)) end
end)
-- The schedulers SequentialLR runs: torch's with a closed form (step(0) restarts them)
local SEQUENTIAL_OF = { StepLR = true, MultiStepLR = true, ExponentialLR = true, LinearLR = true, CosineAnnealingLR = true, LambdaLR = true }
define_setting("scheduler", "SequentialLR", { "runs its schedulers one after another, the next from its own start at each milestone",
  torch = "torch.optim.lr_scheduler.SequentialLR",
  example = "SequentialLR { schedulers = { LinearLR { start_factor = 0.1, total_iters = 3 }, ExponentialLR { gamma = 0.9 } }, milestones = {3} }" }, {
  schedulers = { list_of("scheduler"), nil, required = true,
    doc = "StepLR, MultiStepLR, ExponentialLR, LinearLR, CosineAnnealingLR or LambdaLR { ... }, all with one interval (SequentialLR's)" },
  milestones = { milestones, nil, required = true, doc = "the counts at which the next scheduler starts: one fewer than the schedulers" },
}, function(a, where)
  for i, sc in ipairs(a.schedulers) do
    if not SEQUENTIAL_OF[sc.kind] then
      diag.error(sc.where, string.format("SequentialLR: schedulers[%d] is %s; SequentialLR runs %s", i, sc.kind,
        table.concat(util.sorted_keys(SEQUENTIAL_OF), ", ")))
    elseif sc.args.interval ~= a.schedulers[1].args.interval then
      diag.error(sc.where, string.format("SequentialLR: schedulers[%d] steps per %s, schedulers[1] per %s; give them one interval",
        i, sc.args.interval, a.schedulers[1].args.interval))
    end
  end
  if #a.milestones ~= #a.schedulers - 1 then
    diag.error(diag.key_where(where, "milestones"), string.format("SequentialLR: %d schedulers need %d milestone%s, got %d (torch raises the same)",
      #a.schedulers, #a.schedulers - 1, #a.schedulers == 2 and "" or "s", #a.milestones))
  end
  a.interval = a.schedulers[1] and a.schedulers[1].args.interval or "epoch"
end)
define_setting("scheduler", "ReduceLROnPlateau", { "multiplies the learning rate by factor when the monitored metric stops improving, once per validation",
  torch = "torch.optim.lr_scheduler.ReduceLROnPlateau (Lightning's monitor)",
  example = 'ReduceLROnPlateau { monitor = "val/loss", factor = 0.5, patience = 2 }' }, {
  monitor = { checkers.string, "val/loss", doc = "the metric it steps on after each validation: 'val/loss', 'val/acc' or 'train/loss' (each epoch)" },
  mode = { enum("min", "max"), "min" }, factor = { checkers.posnumber, 0.1 }, patience = { checkers.nonnegint, 10 },
  threshold = { checkers.nonneg, 1e-4 }, threshold_mode = { enum("rel", "abs"), "rel" }, cooldown = { checkers.nonnegint, 0 },
  min_lr = { checkers.nonneg, 0.0 }, eps = { checkers.nonneg, 1e-8 },
}, function(a, where)
  if a.factor >= 1 then diag.error(diag.key_where(where, "factor"), "ReduceLROnPlateau: factor should be < 1.0 (torch raises the same)") end
end)

define_setting("callback", "EarlyStopping", { "stops when the monitored metric has not improved for patience validations",
  torch = "lightning.pytorch.callbacks.EarlyStopping", example = 'EarlyStopping { monitor = "val/loss", patience = 3 }' }, {
  monitor = { checkers.string, nil, required = true, doc = "'val/loss', 'val/acc', 'train/loss', or a train.log metric's 'val/NAME' or 'train/NAME_epoch'" }, mode = { enum("min", "max"), "min" },
  patience = { checkers.nonnegint, 3 }, min_delta = { checkers.nonneg, 0.0 },
})
define_setting("callback", "ModelCheckpoint", { "keeps the best save_top_k checkpoints by monitor (or the last, without one)",
  torch = "lightning.pytorch.callbacks.ModelCheckpoint",
  example = 'ModelCheckpoint { monitor = "val/loss", save_top_k = 2, save_last = true }' }, {
  monitor = { checkers.string, nil, doc = "'val/loss', 'val/acc', 'train/loss' or a train.log metric's 'val/NAME' or 'train/NAME_epoch'; none: the latest is the best" }, mode = { enum("min", "max"), "min" },
  save_top_k = { checkers.int, 1 }, save_last = { checkers.bool, false },
  dirpath = { checkers.string, nil }, filename = { checkers.string, nil },
})

-- Loggers take Lightning's arguments.  A relative directory is under the run's --out.
-- every_n_steps: this logger's step interval (default: train.log_every_n_steps).
for _, name in ipairs { "CSVLogger", "TensorBoardLogger" } do
  define_setting("logger", name, { ({ CSVLogger = "metrics.csv and hparams.yaml under root_dir/name/version_N",
      TensorBoardLogger = "TensorBoard event files (scalars) under root_dir/name/version_N" })[name],
      torch = "lightning.fabric.loggers." .. name, example = name .. ' { root_dir = "logs", every_n_steps = 10 }' }, {
    root_dir = { checkers.string, "logs" }, name = { checkers.string, "lightning_logs" },
    version = { checkers.nonnegint, nil, doc = "default: the next free version_N" },
    every_n_steps = { checkers.posint, nil, doc = "log step rows every N steps (default: train.log_every_n_steps)" },
    flush_logs_every_n_steps = { checkers.posint, 100, doc = "write buffered rows at least every N steps" },
  })
end
local function check_tags(v, what)
  if type(v) ~= "table" or getmetatable(v) ~= nil then return fail(what, "a table of string tags (key = \"value\")", v) end
  for k, x in pairs(v) do
    if type(k) ~= "string" or type(x) ~= "string" then
      return fail(what .. "." .. tostring(k), "a string tag (key = \"value\")", x)
    end
  end
  return v
end
-- tracking_uri: a file store ("file:PATH" or a path) or a SQLite database (SQLAlchemy's
-- "sqlite:///RELATIVE" or "sqlite:////ABSOLUTE"); MLflow servers are not reachable here
local function check_tracking_uri(v, what)
  if type(v) ~= "string" then return fail(what, "a string", v) end
  local scheme = v:match("^(%a[%w+.-]*)://") or v:match("^(%a[%w+.-]*):")
  if scheme == "sqlite" then
    local path = v:match("^sqlite:///(.*)$")
    if not path or path == "" or path == "/" or path:match("/$") or path:match("^:memory:") or path:find("?", 1, true) then
      return nil, string.format("%s: '%s' names no SQLite file; write sqlite:///RELATIVE/PATH.db (under --out) or sqlite:////ABSOLUTE/PATH.db", what, v)
    end
    return v
  end
  if scheme and scheme ~= "file" then
    return nil, string.format("%s: '%s' is a %s URI; only MLflow's file store (file:PATH or a path) and SQLite (sqlite:///PATH) are written", what, v, scheme)
  end
  return v
end

-- Where an MLFlowLogger's args put the run: { dir = the file store, or the SQL store's
-- artifact root (mlruns/ beside the database, MLflow's default root); db = the SQLite file
-- or nil }; relative paths are under the run's --out.
function spec.mlflow_store(a)
  local uri = a.tracking_uri
  local db = uri and uri:match("^sqlite:///(.*)$")
  if db then return { db = db, dir = (db:match("^(.*)/[^/]*$") or ".") .. "/mlruns" } end
  return { dir = uri and uri:gsub("^file://", ""):gsub("^file:", "") or a.save_dir }
end
define_setting("logger", "MLFlowLogger", { "an MLflow file store (mlruns/) or SQLite database (tracking_uri = \"sqlite:///mlflow.db\") that mlflow ui opens: params, metrics, tags, artifacts",
  torch = "lightning.pytorch.loggers.MLFlowLogger",
  example = 'MLFlowLogger { experiment_name = "mlp", run_name = "first", save_dir = "./mlruns" }' }, {
  experiment_name = { checkers.string, "lightning_logs" }, run_name = { checkers.string, nil },
  tracking_uri = { check_tracking_uri, nil, doc = "file:PATH or a path (a file store), or sqlite:///PATH.db (MLflow's SQL store; relative paths under --out)" },
  save_dir = { checkers.string, "./mlruns" },
  tags = { check_tags, {} }, log_model = { checkers.bool, false,
    doc = "true: last.safetensors and ModelCheckpoint's kept checkpoints as artifacts (the best tagged loom.best_checkpoint)" }, run_id = { function(v, what)
    if type(v) == "string" and #v == 32 and v:match("^[0-9a-f]+$") then return v end
    return fail(what, "a run id (32 hex digits)", v)
  end, nil }, every_n_steps = { checkers.posint, nil },
})

-- User hooks (Fabric's fabric.call): C functions of the user's own, in a .c file beside
-- the spec (runtime/loom_hooks.h documents what they are given), compiled into the
-- program and called at these points of the run.
spec.HOOK_POINTS = { "on_train_batch_end", "on_validation_end", "on_save_checkpoint", "on_train_end" }
local function c_function_name(v, what)
  if type(v) == "string" and v:match("^[%a_][%w_]*$") then return v end
  return fail(what, "the name of a C function", v)
end
do
  local schema = { source = { checkers.string, nil, required = true } }
  for _, point in ipairs(spec.HOOK_POINTS) do schema[point] = { c_function_name, nil } end
  define_setting("hooks", "Hooks", { "C functions of your own (a .c file beside the spec) called at points of the run",
    torch = "lightning.fabric.Fabric.call", example = 'Hooks { source = "my_hooks.c", on_train_end = "my_end" }' },
    schema, function(a, where)
    local named = false
    for _, point in ipairs(spec.HOOK_POINTS) do named = named or a[point] ~= nil end
    if not named then
      diag.error(where, "Hooks: name at least one function (" .. table.concat(spec.HOOK_POINTS, ", ") .. ")")
      return
    end
    if not a.source:match("%.c$") then
      diag.error(diag.key_where(where, "source"), string.format("Hooks.source: '%s' is not a .c file", a.source))
      return
    end
    -- beside the spec: a relative path is from the spec's directory
    local path = a.source
    if path:sub(1, 1) ~= "/" then path = ((where and where.file or ""):match("^(.*)/") or ".") .. "/" .. path end
    local regular, why = require("loomc").is_regular_file(path)
    local f = regular and io.open(path, "rb")
    if not f then
      diag.error(diag.key_where(where, "source"), string.format("Hooks.source: cannot read '%s'%s", path,
        regular == false and " (not a regular file)" or why and (": " .. why) or ""))
      return
    end
    a.text = f:read("a")
    f:close()
    a.path = path
  end)
end

define_setting("data", "FashionMNIST", { "Fashion-MNIST from its IDX files: fields image {1, 28, 28} (float in [0, 1]) and label",
  torch = "torchvision.datasets.FashionMNIST + random_split", example = "FashionMNIST { val_split = 5000, normalize = true }" }, {
  root = { checkers.string, "/usr/share/datasets/fashion-mnist", doc = "the directory of the IDX files (the program's --data overrides it)" },
  val_split = { checkers.nonnegint, 5000, doc = "training samples held out for validation" },
  normalize = { checkers.bool, false, doc = "(x - mean) / std" },
  mean = { checkers.number, 0.2860 }, std = { checkers.posnumber, 0.3530 },
})
define_setting("data", "Synthetic", { "random samples drawn by the program (each field a Tensor{...} with its dist)",
  torch = "a TensorDataset of torch.rand / torch.randint",
  example = 'Synthetic { fields = { x = Tensor{4, dist = "normal"}, target = Tensor{dtype = "int64", dist = "randint", high = 3} }, size = 256 }' }, {
  fields = { doc = "field name → Tensor{...}: the model's inputs and the loss's targets", function(v, what)
    if type(v) ~= "table" then return fail(what, "a table of Tensor declarations", v) end
    for k, x in pairs(v) do
      if type(k) ~= "string" or not spec.is_decl(x) then
        return fail(what .. "." .. tostring(k), "a Tensor{...} declaration", x)
      end
      if not util.is_c_name(k) then return nil, spec.field_name_error(what, k) end
    end
    return v
  end, nil, required = true },
  size = { checkers.posint, 1024, doc = "training samples" }, val_size = { checkers.nonnegint, 256, doc = "validation samples" },
})
define_setting("data", "Npy", { "arrays from .npy files, one per field (first axis: the samples); shapes and dtypes from their headers",
  torch = "a TensorDataset of numpy.load(...) + random_split",
  example = 'Npy { fields = { x = "x.npy", target = "target.npy" }, val_split = 16 }' }, {
  fields = { doc = "field name → .npy file (relative to the working directory)", function(v, what)
    if type(v) ~= "table" then return fail(what, "a table: field name → .npy file", v) end
    for k, x in pairs(v) do
      if type(k) ~= "string" or type(x) ~= "string" then return fail(what .. "." .. tostring(k), "a file name", x) end
      if not util.is_c_name(k) then return nil, spec.field_name_error(what, k) end
    end
    return v
  end, nil, required = true },
  val_split = { checkers.nonnegint, 0, doc = "the last N samples are the validation set" },
})

-- Token files in llm.c's layout (`loom data tokens` writes them): windows of context + 1
-- tokens; the batch's `inputs` field holds the first context tokens, `targets` the next
-- token of each.  random: windows at every offset, drawn by the seeded shuffle;
-- else sequential, non-overlapping windows.  Validation windows are sequential.
define_setting("data", "Tokens", { "token windows from llm.c-layout token files (loom data tokens writes them)",
  torch = "llm.c / nanoGPT's token .bin files and their random (B, T+1) windows",
  example = 'Tokens { train = "data/kjv.bin", val = "data/kjv_val.bin", context = 8 }' }, {
  train = { checkers.string, nil, required = true }, val = { checkers.string, nil },
  context = { checkers.posint, nil, required = true }, random = { checkers.bool, true },
  inputs = { checkers.string, "idx" }, targets = { checkers.string, "targets" },
}, function(a, where)
  for _, k in ipairs { "inputs", "targets" } do
    if not util.is_c_name(a[k]) then diag.error(diag.key_where(where, k), spec.field_name_error("Tokens." .. k, a[k])) end
  end
  if a.inputs == a.targets then diag.error(where, "Tokens: inputs and targets name the same field '" .. a.inputs .. "'") end
end)

-- A validation split: an integer count of samples, or a fraction in (0, 1) (as
-- scikit-learn's train_test_split reads test_size); drawn at random with the run's seed.
local function check_val_split(v, what)
  if math.type(v) == "integer" and v >= 0 then return v end
  if type(v) == "number" and v > 0 and v < 1 then return v + 0.0 end
  return fail(what, "a count of samples (an integer >= 0) or a fraction in (0, 1)", v)
end
-- A CSV column: its header name, or its 0-based index.
local function is_column(x) return type(x) == "string" or (math.type(x) == "integer" and x >= 0) end
local function check_columns(v, what)
  if is_column(v) then return { v } end
  if type(v) == "table" and getmetatable(v) == nil and #v > 0 then
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    local ok = n == #v
    for i = 1, #v do ok = ok and is_column(v[i]) end
    if ok then return v end
  end
  return fail(what, "a column name or 0-based index, or a list of them", v)
end
local function check_classes(v, what)
  if math.type(v) == "integer" and v > 1 then return v end
  if type(v) == "table" and getmetatable(v) == nil and #v > 1 then
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    local ok = n == #v
    for i = 1, #v do ok = ok and type(v[i]) == "string" end
    if ok then return v end
  end
  return fail(what, "a number of classes (an integer > 1) or the list of the classes' names", v)
end
local function check_delimiter(v, what)
  if type(v) == "string" and #v == 1 and v ~= '"' and v ~= "\n" and v ~= "\r" then return v end
  return fail(what, "one character (',', ';', '\\t', ...)", v)
end
-- the fields a data source names (inputs, targets): plain, distinct names
local function check_field_names(a, where, kind)
  for _, k in ipairs { "inputs", "targets" } do
    if not util.is_c_name(a[k]) then diag.error(diag.key_where(where, k), spec.field_name_error(kind .. "." .. k, a[k])) end
  end
  if a.inputs == a.targets then diag.error(where, kind .. ": inputs and targets name the same field '" .. a.inputs .. "'") end
end
define_setting("data", "CSV", { "numeric columns of a CSV file (by header name or 0-based index): a float input field and a target",
  torch = "pandas.read_csv(...)[columns] as a TensorDataset + random_split",
  example = 'CSV { train = "data/iris.csv", columns = { "sepal_length", "sepal_width", "petal_length", "petal_width" }, target = "species", classes = { "setosa", "versicolor", "virginica" }, val_split = 0.2 }' }, {
  train = { checkers.string, nil, required = true, doc = "the training file (the program's --data DIR: the file of that name in DIR)" },
  val = { checkers.string, nil, doc = "a validation file with the same columns (else val_split)" },
  val_split = { check_val_split, 0, doc = "validation rows drawn at random from train (with the run's seed): a count, or a fraction in (0, 1)" },
  columns = { check_columns, nil, required = true, doc = "the input field's columns, in this order: header names or 0-based indices" },
  target = { check_columns, nil, required = true, doc = "the target column (a list: several float targets)" },
  classes = { check_classes, nil, doc = "classification: N (cells are class indices 0..N-1) or the classes' names (cells are names); none: float targets (regression), shape {#target}" },
  delimiter = { check_delimiter, ",", doc = "the field separator (pandas' sep, numpy's delimiter)" },
  header = { checkers.bool, true, doc = "the first row names the columns (pandas' header = 0); false: columns are 0-based indices" },
  inputs = { checkers.string, "x", doc = "the input field's name" }, targets = { checkers.string, "target", doc = "the target field's name" },
}, function(a, where)
  check_field_names(a, where, "CSV")
  if a.classes and #a.target ~= 1 then
    diag.error(diag.key_where(where, "target"), "CSV: classes need one target column (a class index or name), got " .. #a.target)
  end
  if not a.header then
    for _, k in ipairs { "columns", "target" } do
      for _, c in ipairs(a[k]) do
        if type(c) == "string" then
          diag.error(diag.key_where(where, k), string.format("CSV.%s: '%s' is a name, but header = false: give 0-based column indices", k, c))
        end
      end
    end
  end
  if a.val and a.val_split ~= 0 then diag.error(diag.key_where(where, "val_split"), "CSV: give val (a file) or val_split, not both") end
end)

-- torchvision's ImageFolder with transforms Resize(size, antialias=False) (bilinear),
-- RandomCrop(size, padding) and RandomHorizontalFlip(p) on training data, ToTensor()
-- and Normalize(mean, std).
local function check_size(v, what)
  if math.type(v) == "integer" and v > 0 then return { v, v } end
  if type(v) == "table" and getmetatable(v) == nil and #v == 2 and math.type(v[1]) == "integer" and math.type(v[2]) == "integer"
     and v[1] > 0 and v[2] > 0 then return { v[1], v[2] } end
  return fail(what, "a size N or {height, width}", v)
end
local function check_channel_values(v, what)
  if type(v) == "number" then return { v + 0.0 } end
  if type(v) == "table" and getmetatable(v) == nil and #v >= 1 then
    local out = {}
    for i = 1, #v do
      if type(v[i]) ~= "number" then return fail(what, "a number per channel", v) end
      out[i] = v[i] + 0.0
    end
    return out
  end
  return fail(what, "a number per channel ({r, g, b} or {gray})", v)
end
local function check_random_crop(v, what)
  if type(v) == "table" and getmetatable(v) == nil then
    local ok = math.type(v.padding) == "integer" and v.padding > 0
    for k in pairs(v) do ok = ok and (k == "padding" or k == "size") end
    if ok and (v.size == nil or check_size(v.size, what .. ".size")) then return { padding = v.padding, size = v.size and check_size(v.size) } end
  end
  return fail(what, "{ padding = N } (RandomCrop(size, padding): size, if given, the image's)", v)
end
define_setting("data", "ImageFolder", { "images in class folders (root/CLASS/*.png|jpg): PNG and JPEG, resized, normalised, augmented",
  torch = "torchvision.datasets.ImageFolder + Resize, RandomCrop, RandomHorizontalFlip, ToTensor, Normalize",
  example = 'ImageFolder { root = "data/pets", size = 32, mean = { 0.5, 0.5, 0.5 }, std = { 0.25, 0.25, 0.25 }, random_crop = { padding = 4 }, random_horizontal_flip = 0.5, val_split = 0.1 }' }, {
  root = { checkers.string, nil, required = true, doc = "the training images: root/CLASS/FILE; classes sorted by name are labels 0, 1, ... (--data DIR: DIR/basename(root))" },
  val = { checkers.string, nil, doc = "a validation folder with the same class folders (else val_split)" },
  val_split = { check_val_split, 0, doc = "validation images drawn at random from root (with the run's seed): a count, or a fraction in (0, 1)" },
  size = { check_size, nil, required = true, doc = "every image resized to N x N or {height, width}: bilinear, as Resize((height, width), antialias=False) on a uint8 tensor image (Resize(N) would keep the aspect ratio: not this)" },
  channels = { enum(1, 3), 3, doc = "3: RGB, 1: gray (PIL's convert('L'))" },
  mean = { check_channel_values, nil, doc = "Normalize's mean per channel (default 0)" },
  std = { check_channel_values, nil, doc = "Normalize's std per channel (default 1)" },
  random_crop = { check_random_crop, nil, doc = "training images: RandomCrop(size, padding): pad with zeros, crop back at random" },
  random_horizontal_flip = { checkers.prob, 0.0, doc = "training images: flipped left-right with this probability" },
  inputs = { checkers.string, "image", doc = "the image field's name" }, targets = { checkers.string, "label", doc = "the class field's name" },
}, function(a, where)
  check_field_names(a, where, "ImageFolder")
  for _, k in ipairs { "mean", "std" } do
    local v = a[k]
    if v and #v ~= a.channels then
      diag.error(diag.key_where(where, k), string.format("ImageFolder.%s has %d values for %d channel%s", k, #v, a.channels, a.channels == 1 and "" or "s"))
    end
  end
  for _, x in ipairs(a.std or {}) do
    if x <= 0 then diag.error(diag.key_where(where, "std"), "ImageFolder.std: every value must be > 0") break end
  end
  local c = a.random_crop
  if c and c.size and (c.size[1] ~= a.size[1] or c.size[2] ~= a.size[2]) then
    diag.error(diag.key_where(where, "random_crop"), string.format("ImageFolder.random_crop: size {%d, %d} is not the image's {%d, %d}: "
      .. "validation images would have another shape (resize to the crop's size instead)", c.size[1], c.size[2], a.size[1], a.size[2]))
  end
  if a.val and a.val_split ~= 0 then diag.error(diag.key_where(where, "val_split"), "ImageFolder: give val (a folder) or val_split, not both") end
end)

-- Each data source's setting that sizes its validation split: a callback that
-- monitors val/* needs it above 0.
local VALIDATION_SIZE = { FashionMNIST = "val_split", Synthetic = "val_size", Npy = "val_split", CSV = "val_split",
                          ImageFolder = "val_split" }

-- The metrics the generated program logs (val/acc only for a loss with an accuracy:
-- the emitter checks that one).
spec.METRICS = { "train/loss", "val/loss", "val/acc" }

-- A callback's monitor that can never be met: an unknown metric, or val/* without
-- validation data (Lightning raises for both rather than never stopping).
local function check_monitors(tr)
  local watchers = { table.unpack(tr.callbacks or {}) }
  if tr.scheduler and tr.scheduler.kind == "ReduceLROnPlateau" then watchers[#watchers + 1] = tr.scheduler end
  for _, cb in ipairs(watchers) do
    local m = cb.args.monitor
    if m ~= nil then
      local known = false
      for _, name in ipairs(spec.METRICS) do known = known or name == m end
      local size_key = tr.data and VALIDATION_SIZE[tr.data.kind]
      -- a train.log metric's val/NAME or train/NAME_epoch: its names are known once log is
      -- traced (gen/graph.lua checks them then)
      local user = type(tr.log) == "function" and (m:match("^val/[%a_][%w_]*$") or m:match("^train/[%a_][%w_]*_epoch$"))
      if not known and not user then
        diag.error(diag.key_where(cb.where, "monitor"), string.format("%s: cannot monitor '%s'; the program logs %s%s",
          cb.kind, m, table.concat(spec.METRICS, ", "), util.did_you_mean(m, spec.METRICS)))
      elseif m:match("^val/") and tr.data and tr.data.kind == "Tokens" and not tr.data.args.val then
        diag.error(diag.key_where(cb.where, "monitor"), string.format(
          "%s: monitor '%s' needs validation data, but Tokens has no val file; set val, or monitor 'train/loss'",
          cb.kind, m))
      elseif m:match("^val/") and size_key and tr.data.args[size_key] == 0 and not tr.data.args.val then
        diag.error(diag.key_where(cb.where, "monitor"), string.format(
          "%s: monitor '%s' needs validation data, but %s has none (%s = 0); set %s, or monitor 'train/loss'",
          cb.kind, m, tr.data.kind, size_key, size_key))
      end
    end
  end
end

-- OneCycleLR's cycle_momentum needs an optimizer with a momentum or beta1 to cycle
-- (torch raises for one without); loom also refuses a momentum of 0 (torch would
-- make it the cycled value and start a buffer) and NAdam (its mu_product would need
-- every earlier step's beta1).
local function check_cycled_momentum(tr)
  local s, o = tr.scheduler, tr.optimizer
  if not (s and o and s.kind == "OneCycleLR" and s.args.cycle_momentum) then return end
  local why
  if o.kind == "Adagrad" then
    why = "Adagrad has no momentum or beta1 to cycle (torch raises the same)"
  elseif o.kind == "NAdam" then
    why = "NAdam's mu_product with a cycled beta1 is not supported"
  elseif (o.kind == "SGD" or o.kind == "RMSprop") and o.args.momentum == 0 then
    why = o.kind .. " has momentum = 0, which torch would replace by the cycled momentum; give it a momentum"
  end
  if why then
    diag.error(diag.key_where(s.where, "cycle_momentum"), "OneCycleLR: cycle_momentum = true, but " .. why
      .. "; or set cycle_momentum = false")
  end
end

-- A data field's name becomes a member of the generated program's batch struct.
function spec.field_name_error(what, k)
  return string.format("%s: the field name %s is not a plain name (letters, digits and '_', not a C keyword, "
    .. "not starting with a digit or with '_' and a capital)", what, util.c_string(k))
end

---------------------------------------------------------------------------
-- Tensor declarations: model inputs and data fields (per-sample shape).

local Decl = { __name = "TensorDecl" }
local decl_counter = 0
function spec.is_decl(v) return getmetatable(v) == Decl end

local DTYPES = { float = "float", float32 = "float", int64 = "int64", long = "int64" }
local DISTS = { uniform = true, normal = true, bernoulli = true, randint = true }

local function Tensor(t)
  local where = diag.here()
  if type(t) ~= "table" then
    diag.fatal(where, "Tensor takes a table: Tensor{3, 32, 32} or Tensor{dtype = 'int64'}")
  end
  local dims, last = {}, 0
  for k in pairs(t) do if math.type(k) == "integer" and k > last then last = k end end
  for i = 1, last do
    local d = t[i]
    if math.type(d) ~= "integer" or d <= 0 then
      diag.error(where, string.format("Tensor: dimension %d must be a positive integer, got %s", i, show(d)))
    end
    dims[i] = d
  end
  local known = { dtype = true, dist = true, low = true, high = true }
  for k in pairs(t) do
    if math.type(k) == "integer" and k < 1 then
      diag.error(where, string.format("Tensor: unknown entry [%d]", k))
    elseif math.type(k) ~= "integer" and not known[k] then
      diag.error(where, spec.unknown_setting("Tensor", tostring(k), util.sorted_keys(known)))
    end
  end
  local dtype = DTYPES[t.dtype or "float"]
  if not dtype then
    diag.error(where, string.format("Tensor: dtype must be 'float32' or 'int64', got '%s'", tostring(t.dtype)))
  end
  if t.dist ~= nil and not DISTS[t.dist] then
    diag.error(where, string.format("Tensor: dist must be one of 'uniform', 'normal', 'bernoulli', 'randint', got '%s'%s",
      tostring(t.dist), util.did_you_mean(tostring(t.dist), util.sorted_keys(DISTS))))
  end
  for _, k in ipairs { "low", "high" } do
    if t[k] ~= nil and type(t[k]) ~= "number" then
      diag.error(where, string.format("Tensor: %s must be a number, got %s", k, show(t[k])))
    end
  end
  if t.dist == "randint" and math.type(t.high) ~= "integer" then
    diag.error(where, "Tensor: dist = 'randint' needs an integer 'high' (exclusive)")
  end
  decl_counter = decl_counter + 1
  return setmetatable({ shape = dims, dtype = dtype or "float", dist = t.dist, low = t.low, high = t.high,
                        where = where, seq = decl_counter }, Decl)
end

---------------------------------------------------------------------------
-- fabric { ... }: exactly Fabric's accepted strings.

local PRECISION_ALIASES = {
  ["64"] = "64-true", ["32"] = "32-true", ["16"] = "16-mixed", ["bf16"] = "bf16-mixed",
  [64] = "64-true", [32] = "32-true", [16] = "16-mixed",
}
local PRECISIONS = { "32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true" }

local function check_precision(v, what)
  if PRECISION_ALIASES[v] then return PRECISION_ALIASES[v] end
  for _, p in ipairs(PRECISIONS) do if v == p then return v end end
  if type(v) == "string" and v:match("^transformer%-engine") then
    return nil, string.format("%s '%s' is a Fabric precision that loom does not support (NVIDIA Transformer Engine)", what, v)
  end
  local all = { table.unpack(PRECISIONS) }
  for _, a in ipairs { "64", "32", "16", "bf16" } do all[#all + 1] = a end
  return nil, string.format("%s: unknown precision %s; expected one of %s (or the aliases 64, 32, 16, 'bf16')%s", what,
    type(v) == "string" and ("'" .. v .. "'") or tostring(v), table.concat(PRECISIONS, ", "),
    type(v) == "string" and util.did_you_mean(v, all) or "")
end

local function check_devices(v, what)
  if v == "auto" or v == -1 then return v end
  if math.type(v) == "integer" and v > 0 then return v end
  if type(v) == "string" and v:match("^%d+$") and tonumber(v) > 0 then return math.tointeger(tonumber(v)) end
  if type(v) == "table" and #v > 0 then
    for _, d in ipairs(v) do
      if math.type(d) ~= "integer" or d < 0 then return fail(what, "a list of device indices", v) end
    end
    return v
  end
  return fail(what, "a positive integer, a list of device indices, -1 (all) or 'auto'", v)
end

local function check_strategy(v, what)
  local ok = { auto = true, ddp = true, fsdp = true }
  if ok[v] then return v end
  local known_elsewhere = { dp = true, ddp_spawn = true, deepspeed = true, xla = true, single_device = false }
  if type(v) == "string" and known_elsewhere[v] then
    return nil, string.format("%s '%s' is a Fabric strategy that loom does not support; use 'auto', 'ddp' or 'fsdp'", what, v)
  end
  local r, msg = enum("auto", "ddp", "fsdp")(v, what)
  return r, msg
end

-- Also for the command line's --precision.
spec.check_precision = check_precision
spec.check_devices = check_devices   -- and --devices

local FABRIC_SCHEMA = {
  accelerator = { function(v, what)
    if v == "gpu" then return "cuda" end
    if v == "mps" or v == "tpu" then
      return nil, string.format("%s '%s' is a Fabric accelerator that loom does not support; use 'cpu', 'cuda', 'gpu' or 'auto'", what, v)
    end
    return enum("cpu", "cuda", "gpu", "auto")(v, what)
  end, "auto", doc = "'cpu', 'cuda' ('gpu'), or 'auto': both programs, the CUDA one falling back to the CPU's" },
  devices = { check_devices, "auto", doc = "how many devices (the CUDA program runs on one: 1 or 'auto')" },
  num_nodes = { checkers.posint, 1, doc = "machines (1)" },
  strategy = { check_strategy, "auto", doc = "'auto', 'ddp' or 'fsdp': with devices = N > 1 on the CPU, 'ddp' (or 'auto') trains N ranks over MPI (loom launch); 'fsdp' shards the parameters, gradients and optimizer state over them (sharding_strategy)" },
  -- FSDP's settings (Lightning's FSDPStrategy / PyTorch's FullyShardedDataParallel names)
  sharding_strategy = { enum("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"), "FULL_SHARD",
    doc = "fsdp: 'FULL_SHARD' (FSDPStrategy's default) shards the parameters, gradients and optimizer state, gathering the parameters one unit (auto_wrap_policy) at a time around its forward and backward; 'SHARD_GRAD_OP' shards gradients and optimizer state (each rank updates its shard; the parameters are all-gathered after the step); 'NO_SHARD' is ddp; 'HYBRID_SHARD' is not implemented yet" },
  cpu_offload = { checkers.bool, false, doc = "fsdp: FSDPStrategy's cpu_offload; moot on the CPU backend (true is refused)" },
  auto_wrap_policy = { function(v, what)
    -- ModuleWrapPolicy's module classes, by name (Fabric takes the classes themselves)
    local ok = type(v) == "table" and #v > 0
    for k, x in pairs(ok and v or {}) do ok = ok and math.type(k) == "integer" and type(x) == "string" end
    if ok then return v end
    return fail(what, "a list of module class names (ModuleWrapPolicy's, e.g. { \"Linear\" })", v)
  end, nil, doc = "fsdp FULL_SHARD: the units gathered one at a time, as ModuleWrapPolicy's module classes: { \"Linear\", ... } makes each module of those classes a unit (the innermost one owns its parameters; the rest is the root's); left out, each top-level child module is a unit" },
  -- DDP's settings (PyTorch's DistributedDataParallel / Lightning's names)
  bucket_cap_mb = { checkers.posnumber, 25, doc = "ddp: gradients are averaged in buckets of about this many MB, each started when its gradients are final in backward (PyTorch DDP's bucket_cap_mb)" },
  sync_batchnorm = { checkers.bool, false, doc = "ddp and fsdp: BatchNorm's training statistics over all ranks' batches (torch.nn.SyncBatchNorm); false, the default, keeps each rank's own as PyTorch DDP does" },
  ddp_timeout = { checkers.posnumber, 300, doc = "ddp: seconds a rank waits in one collective before ending the job with one line (a dead or stuck rank); the program's --ddp-timeout S overrides it" },
  precision = { check_precision, "32-true", doc = "32-true, 64-true, 16-mixed, bf16-mixed, 16-true, bf16-true (aliases 64, 32, 16, 'bf16')" },
  -- torch.set_float32_matmul_precision: "high" and "medium" let float32 GEMMs run in
  -- TF32 on the GPU (the CUDA backend; the CPU ignores it, as PyTorch's CPU matmuls do)
  float32_matmul_precision = { enum("highest", "high", "medium"), "highest",
    doc = "torch.set_float32_matmul_precision: 'high'/'medium' allow TF32 GEMMs on the GPU" },
  detect_anomaly = { checkers.bool, false, doc = "torch.autograd.detect_anomaly: the CPU training program checks every op's "
    .. "output (forward) and gradients (backward) for NaN/Inf and stops at the first with the op's spec line and its inputs' "
    .. "min, max and non-finite count; absent from the code when false (loom build --detect-anomaly turns it on too)" },
}

local function check_clip(v, what)
  if type(v) ~= "table" or getmetatable(v) then return fail(what, "{max_norm = N[, norm_type = 2]} or {clip_val = V}", v) end
  local out, errors = validate(what, v, { max_norm = { checkers.posnumber }, norm_type = { checkers.posnumber, 2.0 },
                                          clip_val = { checkers.posnumber } }, diag.key_where(diag.here(), "clip"))
  if errors > 0 then return out end
  if (out.max_norm == nil) == (out.clip_val == nil) then
    return nil, what .. ": give exactly one of max_norm (clip by norm) and clip_val (clip by value)"
  end
  if out.clip_val then out.norm_type = nil end
  return out
end

-- loss = function(m, b) ... end; not a loss function of the DSL itself
local function check_loss(v, what)
  local name
  for n, f in pairs(tensor.functional) do
    if v == f and (not name or #n < #name or (#n == #name and n < name)) then name = n end
  end
  if name then
    return nil, string.format("%s is %s itself; write a function of the model and the batch: "
      .. "%s = function(m, b) return %s(m(b), b.target) end", what, name, what:match("[^.]+$"), name)
  end
  return checkers.func(v, what)
end

-- log_reduce = { name = "mean" | "sum" | "max" }: each train.log metric's reduction over
-- an epoch's (or a validation's) batches; the names are checked against the metrics
-- once train.log is traced (gen/graph.lua)
local LOG_REDUCTIONS = { mean = true, sum = true, max = true }
local function check_log_reduce(v, what)
  if type(v) ~= "table" or getmetatable(v) then return fail(what, '{ name = "mean" | "sum" | "max", ... }', v) end
  for k, r in pairs(v) do
    if type(k) ~= "string" then return nil, what .. ": keys are metric names (strings)" end
    if not LOG_REDUCTIONS[r] then
      return nil, string.format('%s.%s: expected "mean", "sum" or "max", got %s', what, k, spec.show(r))
    end
  end
  return v
end

-- load_raw = "FILE" or { path = "FILE", strict = false }: Fabric's load_raw(path, model, strict)
local function check_load_raw(v, what)
  if type(v) == "string" then v = { path = v } end
  if type(v) ~= "table" or getmetatable(v) then
    return fail(what, 'a file name or { path = "FILE.safetensors", strict = false }', v)
  end
  local out, errors = validate(what, v, { path = { checkers.string, nil, required = true }, strict = { checkers.bool, true } },
                               diag.key_where(diag.here(), "load_raw"))
  if errors > 0 then return out end
  if out.path == "" then return nil, what .. ".path: an empty file name" end
  return out
end

-- freeze = { "Lua pattern", ... }: requires_grad = False for the parameters whose names
-- match (the graph stage checks that each pattern matches one)
local function check_freeze(v, what)
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" or getmetatable(v) or #v == 0 then
    return fail(what, 'a Lua pattern of parameter names or a non-empty list of them, e.g. { "^features%.", "^bn%." }', v)
  end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  if n ~= #v then return fail(what, "a list of Lua patterns", v) end
  local out = {}
  for i, pat in ipairs(v) do
    if type(pat) ~= "string" then return fail(string.format("%s[%d]", what, i), "a Lua pattern (a string)", pat) end
    local ok, err = pcall(string.find, "", pat)
    if not ok then
      return nil, string.format("%s[%d]: '%s' is not a Lua pattern: %s", what, i, pat, (tostring(err):gsub("^.-:%d+: ", "")))
    end
    out[i] = pat
  end
  return out
end

-- optimizers = { name = { Adam { ... }, params = "D" }, ... }: a user training step's
-- optimizers (torch.optim.Adam(D.parameters())), each over the parameters of the named
-- submodules of the model (a name or a list of names).  → a list sorted by name:
-- { name, opt = the optimizer setting, params = { submodule names } }
local function check_optimizers(v, what)
  if type(v) ~= "table" or getmetatable(v) ~= nil then
    return fail(what, 'a table name = { Adam { ... }, params = "submodule" }', v)
  end
  local out = {}
  for _, name in ipairs(util.sorted_keys(v)) do
    local e, w = v[name], string.format("%s.%s", what, tostring(name))
    if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
      return nil, string.format("%s: optimizers are named with identifiers (d = { Adam { ... }, params = \"D\" })", what)
    end
    if type(e) ~= "table" or getmetatable(e) ~= nil or not is_setting(e[1], "optimizer") then
      return fail(w, '{ Adam { ... }, params = "submodule" } (an optimizer and the submodules it updates)', e)
    end
    local params = e.params
    if type(params) == "string" then params = { params } end
    if type(params) ~= "table" or #params == 0 then
      return nil, string.format("%s.params: the names of the model's submodules it updates, e.g. params = \"D\" or { \"enc\", \"dec\" }", w)
    end
    for k in pairs(e) do
      if k ~= 1 and k ~= "params" then
        return nil, string.format("%s: unknown key '%s' (an optimizer's entry is { Adam { ... }, params = ... })", w, tostring(k))
      end
    end
    out[#out + 1] = { name = name, opt = e[1], params = params }
  end
  if #out == 0 then return fail(what, "at least one optimizer", v) end
  return out
end

local TRAIN_SCHEMA = {
  data = { setting_of("data"), nil, required = true, doc = "the data source: FashionMNIST, Synthetic, Npy, Tokens, CSV or ImageFolder { ... }" },
  loss = { check_loss, nil, doc = "function(m, b) returning the loss of the model m on the batch b (or a training_step)" },
  optimizer = { setting_of("optimizer"), nil, doc = "SGD, Adam, AdamW, RMSprop, Adagrad, Adamax, NAdam or RAdam { ... } (with a loss)" },
  training_step = { checkers.func, nil, doc = "function(fabric, m, b): the step written out, as in a Fabric loop: fabric.backward(loss), "
    .. "fabric.optimizers.NAME:step() and :zero_grad(), x:detach(), no_grad(function() ... end), fabric.log_dict({ name = value }) "
    .. "and fabric.log(name, value) (logged as train.log's metrics); returns the loss to log" },
  optimizers = { check_optimizers, nil, doc = "a training_step's optimizers: { d = { Adam { ... }, params = \"D\" }, ... }, "
    .. "each updating the parameters of the model's named submodules" },
  scheduler = { setting_of("scheduler"), nil, doc = "StepLR, MultiStepLR, ExponentialLR, LinearLR, CosineAnnealingLR, LambdaLR, SequentialLR, ReduceLROnPlateau, WarmupCosine or OneCycleLR { ... }" },
  epochs = { checkers.posint, nil, doc = "passes over the training set (Lightning's max_epochs)" },
  max_steps = { checkers.posint, nil, doc = "optimizer steps to stop after (with accumulation: one step per accumulate batches)" },
  batch_size = { checkers.posint, nil, required = true,
    doc = "samples per forward/backward (the micro-batch): one optimizer step sees batch_size × accumulate" },
  accumulate = { checkers.posint, 1, doc = "batches whose gradients add up before each step (Lightning's accumulate_grad_batches)" },
  clip = { check_clip, nil, doc = "{max_norm = N[, norm_type = 2]} or {clip_val = V} (Lightning's gradient_clip_val/_algorithm)" },
  callbacks = { list_of("callback"), {}, doc = "EarlyStopping and ModelCheckpoint { ... }" },
  loggers = { list_of("logger"), {}, doc = "CSVLogger, TensorBoardLogger and MLFlowLogger { ... } (none: a CSVLogger)" },
  log_every_n_steps = { checkers.posint, 50, doc = "write a step row every N steps (Lightning's log_every_n_steps)" },
  log = { checkers.func, nil, doc = "function(m, b, out) returning { name = scalar tensor, ... }: your metrics, traced like the loss "
    .. "(out: the model's output in the loss), logged as train/NAME each step row, train/NAME_epoch, val/NAME and test/NAME "
    .. "(with a training_step: fabric.log_dict in the step instead)" },
  log_reduce = { check_log_reduce, {}, doc = 'a train.log metric\'s reduction over an epoch\'s or a validation\'s batches: '
    .. '{ NAME = "mean" (the default, weighted by batch size) | "sum" | "max" }' },
  hooks = { setting_of("hooks"), nil, doc = "Hooks { ... }: your C functions called during the run" },
  seed = { checkers.nonnegint, 42, doc = "seeds initialisation, shuffling, dropout and synthetic data" },
  init = { checkers.func, nil, doc = "function(name, p) ... end, called once per parameter (named_parameters' order) "
    .. "before training: torch.nn.init's normal_, xavier_uniform_, kaiming_normal_, ... on p (loom help normal_); "
    .. "a parameter it leaves alone keeps PyTorch's default" },
  val_every = { checkers.posint, 1, doc = "validate every N epochs (Lightning's check_val_every_n_epoch)" },
  num_workers = { checkers.nonnegint, 1, doc = "threads that prepare batches beside the training step" },
  load_raw = { check_load_raw, nil, doc = "start from a weights-only safetensors file (a state_dict, PyTorch's names; "
    .. "relative to the working directory): "
    .. "\"FILE\" or { path = \"FILE\", strict = false } (Fabric's load_raw; a fresh optimizer at step 0; F64/F32/F16/BF16 "
    .. "convert to the run's precision; strict = false skips missing and unexpected tensors and lists them; "
    .. "the program's --load-raw FILE and --load-raw-strict true|false override it; --resume ignores it)" },
  freeze = { check_freeze, nil, doc = "Lua patterns of parameter names to freeze (requires_grad = False): no gradient "
    .. "computed for them, no optimizer update, no weight decay (BatchNorm's running statistics still update)" },
}
spec.FABRIC_SCHEMA, spec.TRAIN_SCHEMA = FABRIC_SCHEMA, TRAIN_SCHEMA

spec.doc.fabric = { kind = "block", summary = "Fabric(...)'s arguments: where and in what precision the program runs",
  torch = "lightning.fabric.Fabric(accelerator, devices, strategy, precision)",
  example = 'fabric { accelerator = "cpu", precision = "bf16-mixed" }', schema = FABRIC_SCHEMA }
spec.doc.train = { kind = "block", summary = "the training loop's settings: data, loss, optimizer, schedule, callbacks, loggers",
  torch = "a Fabric training loop, or Lightning Trainer(...)'s arguments",
  example = [[train {
  data = Synthetic { fields = { x = Tensor{4}, target = Tensor{dtype = "int64", dist = "randint", high = 3} } },
  batch_size = 32, accumulate = 4, clip = { max_norm = 1.0 },
  loss = function(m, b) return cross_entropy(m(b), b.target) end,
  optimizer = AdamW { lr = 1e-3 }, epochs = 2,
  callbacks = { EarlyStopping { monitor = "val/loss", patience = 2 } },
}]], schema = TRAIN_SCHEMA }
spec.doc.model = { kind = "block", summary = "declares the model: its inputs, submodules, forward and other methods (one per spec)",
  torch = "a torch.nn.Module subclass (LightningModule without the training_step)",
  example = [[model "Net" {
  inputs = { x = Tensor{4} },
  hidden = Linear(4, 16), out = Linear(16, 3),
  forward = function(m, b) return m.out(relu(m.hidden(b.x))) end,
}]] }
spec.doc.Module = { kind = "block", summary = "declares a reusable module class (fields: submodules, methods); call it to use it",
  torch = "a torch.nn.Module subclass",
  example = [[local block = Module "Block" {
  conv = Conv2d(8, 8, 3, {padding = "same"}), bn = BatchNorm2d(8),
  forward = function(m, x) return relu(m.bn(m.conv(x)) + x) end,
}]] }
spec.doc.Tensor = { kind = "block", summary = "declares a per-sample tensor: a model input or a Synthetic field (dtype, dist, low, high)",
  torch = "the shape of one sample, without the batch dimension",
  example = 'Tensor{3, 32, 32, dist = "uniform"}' }
for _, fname in ipairs(nninit.NAMES) do
  local r = nninit.RULES[fname]
  spec.doc[fname] = { kind = "init", summary = r.summary, torch = "torch.nn.init." .. nninit.DOC_CALLS[fname],
                      example = r.example }
end
spec.doc.calculate_gain = { kind = "init", summary = "the recommended gain for a nonlinearity (torch's table), for the init functions",
  torch = "torch.nn.init.calculate_gain(nonlinearity, param=None)",
  example = 'if p:dim() >= 2 then xavier_normal_(p, calculate_gain("leaky_relu", 0.2)) end' }
spec.doc.nn = { kind = "block", summary = "PyTorch's prefixes as aliases: nn.Linear is Linear, nn.functional.relu is relu",
  torch = "torch.nn, torch.nn.functional", example = "nn.Sequential { nn.Linear(4, 8), nn.ReLU() }" }

---------------------------------------------------------------------------
-- The sandbox.

local FORBIDDEN = {
  io = "file access", os = "the operating system", require = "loading modules", load = "loading code",
  loadfile = "loading files", dofile = "running files", debug = "the debug library",
  package = "the module system", collectgarbage = "the garbage collector",
  getmetatable = "metatables", setmetatable = "metatables", rawget = "raw access",
  rawset = "raw access", rawequal = "raw access", rawlen = "raw access",
}

local function copy_lib(lib, drop)
  local t = {}
  for k, v in pairs(lib) do if not (drop and drop[k]) then t[k] = v end end
  return t
end

-- Fields of a Module/model definition that cannot be what the user meant.
local function check_fields(class_name, def, where, except)
  for k, v in pairs(def) do
    if k ~= except and spec.is_decl(v) then
      diag.error(diag.key_where(where, tostring(k)), string.format(
        "%s.%s: a Tensor{...} declaration cannot be a module field (only model inputs and data fields are declared)",
        class_name, tostring(k)))
    end
  end
end

-- PyTorch's, Lightning's and Fabric's names that loom does not have yet, by family:
-- an unknown name that is one of them is answered with what loom has instead of a
-- far-fetched did-you-mean.
local NOT_YET = {
  module = { "RNN", "LSTMCell", "GRUCell", "RNNCell", "Conv3d",
    "ConvTranspose3d", "MaxPool3d", "AvgPool1d", "AvgPool3d",
    "AdaptiveMaxPool2d", "BatchNorm3d", "SELU", "PReLU",
    "Unflatten", "ZeroPad2d", "Dropout1d", "EmbeddingBag",
    "Bilinear", "PixelShuffle", "Transformer", "TransformerEncoder",
    "TransformerDecoder", "TransformerDecoderLayer" },
  ["function"] = { "conv1d", "conv2d", "linear", "dropout", "layer_norm",
    "batch_norm", "embedding", "max_pool2d", "avg_pool2d", "pad", "interpolate", "one_hot",
    "stack" },
  optimizer = { "Adadelta", "LBFGS", "SparseAdam", "ASGD", "Rprop" },
  scheduler = { "CosineAnnealingWarmRestarts", "CyclicLR", "PolynomialLR", "ConstantLR", "ChainedScheduler",
    "MultiplicativeLR" },
  callback = { "LearningRateMonitor", "StochasticWeightAveraging", "GradientAccumulationScheduler",
    "RichProgressBar", "TQDMProgressBar", "DeviceStatsMonitor", "Timer", "LearningRateFinder", "BatchSizeFinder" },
  logger = { "WandbLogger", "CometLogger", "NeptuneLogger" },
  init = { "eye_", "dirac_", "sparse_" },
}
local NOT_YET_FAMILY = {}
for family, names in pairs(NOT_YET) do for _, n in ipairs(names) do NOT_YET_FAMILY[n] = family end end
local FAMILY_PLURAL = { module = "modules", ["function"] = "functions", optimizer = "optimizers",
                        scheduler = "schedulers", callback = "callbacks", logger = "loggers", init = "init functions" }

-- PyTorch's loss modules: loom's losses are the functions.
local LOSS_MODULES = { CrossEntropyLoss = "cross_entropy", MSELoss = "mse", BCELoss = "bce",
                       BCEWithLogitsLoss = "bce_with_logits", L1Loss = "l1", NLLLoss = "nll_loss", HuberLoss = "huber",
                       SmoothL1Loss = "smooth_l1", KLDivLoss = "kl_div" }

-- Names a PyTorch, Lightning or Fabric script has that a spec says otherwise.
local OTHERWISE = {
  torch = "'torch' is not available in a spec: loom's names have no prefix (torch.cat → cat, torch.nn.Linear → Linear)",
  F = "'F' is not available in a spec: torch.nn.functional's functions have no prefix (F.relu → relu)",
  Trainer = "loom has no Trainer: the loop's settings are train { ... } (loom help train)",
  Fabric = "loom has no Fabric object: Fabric's arguments are fabric { ... } (loom help fabric)",
  LightningModule = "loom has no LightningModule: declare model \"Name\" { ... } with its forward, "
    .. "and the loss in train { loss = ... } (loom help model)",
  Dense = "Dense is Keras's name; loom's (PyTorch's) is Linear(in_features, out_features)",
  DataLoader = "loom has no DataLoader: the data source and batch_size go in train { data = ..., batch_size = N } "
    .. "(loom help data)",
}

-- The names of `family` that loom has, for messages.
local function supported(family)
  if family == "module" then return util.sorted_keys(nn.class) end
  if family == "function" then return util.sorted_keys(tensor.functional) end
  if family == "init" then return util.sorted_keys(nninit.RULES) end
  return spec.families[family]
end

-- The message for a name the spec environment does not have (`all`: the names it has).
function spec.unknown_name(k, all)
  k = tostring(k)
  if OTHERWISE[k] then return OTHERWISE[k] end
  if LOSS_MODULES[k] then
    return string.format("%s: loom's losses are functions: loss = function(m, b) return %s(m(b), b.target) end",
      k, LOSS_MODULES[k])
  end
  local family = NOT_YET_FAMILY[k]
  if family then
    return string.format("%s is not supported yet; supported %s: %s", k, FAMILY_PLURAL[family],
      table.concat(supported(family), ", "))
  end
  return string.format("unknown name '%s'%s", k, util.did_you_mean(k, all))
end

-- `nn.Linear`, `nn.functional.relu`: PyTorch's prefixes, as aliases of the plain names.
local function namespace(prefix, members, family)
  local t = {}
  for k, v in pairs(members) do t[k] = v end
  return setmetatable(t, {
    __name = "namespace",
    __index = function(_, k)
      local msg = spec.unknown_name(k, util.sorted_keys(members))
      if msg:match("^unknown name") then
        msg = string.format("%s has no %s '%s'%s; supported %s: %s", prefix, family == "module" and "module" or "function",
          tostring(k), util.did_you_mean(tostring(k), util.sorted_keys(members)), FAMILY_PLURAL[family],
          table.concat(family == "function" and util.sorted_keys(members) or supported(family), ", "))
      end
      diag.fatal(nil, prefix .. "." .. tostring(k) .. ": " .. msg)
    end,
    __newindex = function(_, k) diag.fatal(nil, string.format("cannot assign %s.%s", prefix, tostring(k))) end,
  })
end

local function make_env(result)
  local dsl = {}
  for name, ctor in pairs(nn.class) do dsl[name] = ctor end
  for name, f in pairs(tensor.functional) do dsl[name] = f end
  for name, f in pairs(settings) do dsl[name] = f end
  dsl.Tensor = Tensor
  local init_fns = nninit.functions()
  for name, f in pairs(init_fns) do dsl[name] = f end
  local nn_members = {}
  for name, ctor in pairs(nn.class) do nn_members[name] = ctor end
  -- torch.nn.functional has neither detach, expand (Tensor methods), no_grad, tensor nor the random draws (torch's)
  local nnf = {}
  local NOT_NNF = { detach = true, no_grad = true, tensor = true, randn = true, rand = true, randn_like = true, rand_like = true,
                   expand = true, tile = true }
  for name, f in pairs(tensor.functional) do if not NOT_NNF[name] then nnf[name] = f end end
  nn_members.functional = namespace("nn.functional", nnf, "function")
  nn_members.init = namespace("nn.init", init_fns, "init")
  dsl.nn = namespace("nn", nn_members, "module")

  dsl.Module = function(name)
    local where = diag.here()
    if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
      diag.fatal(where, "Module takes a class name and a table: Module \"Block\" { ... }")
    end
    return function(def)
      if type(def) ~= "table" then diag.fatal(where, "Module \"" .. name .. "\" needs a table: Module \"" .. name .. "\" { ... }") end
      check_fields(name, def, where)
      local p = nn.define(name, def, where)
      return p
    end
  end

  dsl.model = function(name)
    local where = diag.here()
    if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
      diag.fatal(where, "model takes a class name and a table: model \"Net\" { ... }")
    end
    return function(def)
      if type(def) ~= "table" then diag.fatal(where, "model \"" .. name .. "\" needs a table: model \"" .. name .. "\" { ... }") end
      if result.model then
        diag.error(where, string.format("a spec declares one model; '%s' was already declared at line %d",
          result.model_name, result.model_where.line))
        return
      end
      check_fields(name, def, where, "inputs")
      local p, rec = nn.define(name, def, where, { inputs = true })
      result.model, result.model_name, result.model_where = p, name, where
      -- inputs: one Tensor (forward gets it), or named Tensors (forward gets a table)
      local inputs = def.inputs
      if inputs == nil then
        diag.error(where, string.format("model \"%s\" needs inputs, e.g. inputs = { image = Tensor{1, 28, 28} }", name))
      elseif spec.is_decl(inputs) then
        result.inputs = { { name = "x", decl = inputs } }
        result.single_input = true
      elseif type(inputs) == "table" then
        local list = {}
        for k, v in pairs(inputs) do
          if type(k) ~= "string" then
            diag.error(diag.key_where(where, "inputs"), string.format(
              "model \"%s\": inputs must be named, e.g. inputs = { image = Tensor{1, 28, 28} }; entry [%s] has no name",
              name, tostring(k)))
          elseif not spec.is_decl(v) then
            diag.error(diag.key_where(where, "inputs"), string.format(
              "model \"%s\": inputs.%s must be a Tensor{...} declaration, got %s", name, k, show(v)))
          else
            list[#list + 1] = { name = k, decl = v }
          end
        end
        table.sort(list, function(a, b) return a.decl.seq < b.decl.seq end)
        if #list == 0 and not diag.has_errors() then
          diag.error(where, string.format("model \"%s\": inputs is empty", name))
        end
        result.inputs = list
      else
        diag.error(diag.key_where(where, "inputs"), string.format(
          "model \"%s\": inputs must be a Tensor{...} or a table of them, got %s", name, show(inputs)))
      end
      if not rec.methods.forward then
        if def.forward ~= nil then
          diag.error(diag.key_where(where, "forward"), string.format(
            "model \"%s\": forward must be a function(m, x) ... end, got %s", name, show(def.forward)))
        else
          diag.error(where, string.format("model \"%s\" has no forward = function(m, x) ... end", name))
        end
      end
    end
  end

  dsl.fabric = function(t)
    local where = diag.here()
    if result.fabric then diag.error(where, "fabric { ... } is given twice") end
    result.fabric = validate("fabric", t, FABRIC_SCHEMA, where)
    result.fabric.where = where
    -- the settings the spec wrote (a strategy's setting under another strategy is refused)
    result.fabric.given = {}
    if type(t) == "table" then for k in pairs(t) do result.fabric.given[k] = true end end
    -- Fabric warns about its legacy precision aliases; so does loom
    local p = type(t) == "table" and t.precision
    if (p == 16 or p == "16" or p == "bf16") and where then
      io.stderr:write(string.format("%s:%d: note: precision = %s is Fabric's legacy alias of '%s' (Fabric warns the same); "
        .. "write precision = \"%s\"\n", where.file, where.line, show(p), PRECISION_ALIASES[p], PRECISION_ALIASES[p]))
    end
  end

  dsl.train = function(t)
    local where = diag.here()
    if result.train then diag.error(where, "train { ... } is given twice") end
    local tr, errors = validate("train", t, TRAIN_SCHEMA, where)
    if errors == 0 and type(t) == "table" then
      -- a loss and an optimizer, or a training_step and its optimizers
      if tr.training_step then
        for _, k in ipairs { "loss", "optimizer" } do
          if tr[k] ~= nil then
            errors = errors + 1
            diag.error(diag.key_where(where, k), string.format("train: give a training_step or a %s, not both "
              .. "(a training_step's optimizers are train.optimizers)", k))
          end
        end
        if not tr.optimizers then
          errors = errors + 1
          diag.error(where, "train: a training_step needs its optimizers: optimizers = { d = { Adam { ... }, params = \"D\" } }")
        end
        -- the loop's logs and hparams name the first optimizer (the steps are the user's)
        if errors == 0 then tr.optimizer = tr.optimizers[1].opt end
      else
        if tr.optimizers then
          errors = errors + 1
          diag.error(diag.key_where(where, "optimizers"), "train: optimizers are a training_step's; with a loss give optimizer = ...")
        end
        for _, k in ipairs { "loss", "optimizer" } do
          if tr[k] == nil then errors = errors + 1; diag.error(where, string.format("train: '%s' is required", k)) end
        end
      end
    end
    if errors == 0 and t.epochs == nil and t.max_steps == nil then
      diag.error(where, "train: give epochs or max_steps")
    end
    if errors == 0 then check_monitors(tr); check_cycled_momentum(tr) end
    tr.where = where
    result.train = tr
  end

  local safe = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    select = select, tonumber = tonumber, tostring = tostring, type = type,
    -- a spec may catch its own errors, but not the stop for passing a limit
    pcall = function(f, ...) return diag.after_pcall(pcall(f, ...)) end,
    xpcall = function(f, handler, ...)
      if type(handler) ~= "function" then return xpcall(f, handler, ...) end
      -- the stop is raised from a hook, where hooks are off: the spec's handler
      -- would run unchecked, so it does not see the stop at all
      return diag.after_pcall(xpcall(f, function(e)
        if diag.stopped() then return e end
        return handler(e)
      end, ...))
    end,
    print = function(...)
      local parts = table.pack(...)
      for i = 1, parts.n do parts[i] = tostring(parts[i]) end
      io.stderr:write(table.concat(parts, "\t", 1, parts.n), "\n")
    end,
    math = copy_lib(math), string = copy_lib(string, { dump = true, rep = true }), table = copy_lib(table),
    utf8 = copy_lib(utf8), unpack = table.unpack, _VERSION = _VERSION,
  }
  -- a spec has no use for huge strings; refuse them rather than exhaust memory
  safe.string.rep = function(str, n, sep)
    if type(n) == "number" and type(str) == "string" and n * (#str + #(type(sep) == "string" and sep or "")) > 1 << 24 then
      diag.fatal(nil, "string.rep: the result would be larger than 16 MiB")
    end
    return string.rep(str, n, sep)
  end
  for k, v in pairs(safe) do dsl[k] = v end

  local all_names = util.sorted_keys(dsl)
  local env = setmetatable({}, {
    __index = function(_, k)
      local v = dsl[k]
      if v ~= nil then return v end
      if FORBIDDEN[k] then
        diag.fatal(nil, string.format("'%s' is not available in a spec: specs run in a sandbox without %s", k, FORBIDDEN[k]))
      end
      diag.fatal(nil, spec.unknown_name(k, all_names))
    end,
  })
  dsl._G = env
  return env, dsl, safe
end

-- The names a spec sees: the DSL's and the Lua library's (docs.lua documents each).
function spec.environment()
  local _, dsl, safe = make_env({})
  local lua_names = util.sorted_keys(safe)
  lua_names[#lua_names + 1] = "_G"
  local names = {}
  for _, k in ipairs(util.sorted_keys(dsl)) do if safe[k] == nil and k ~= "_G" then names[#names + 1] = k end end
  return names, lua_names
end

local function as_failure(where, msg)
  diag.error(where, msg)
  local ok, failure = pcall(diag.check)
  return not ok and failure or nil
end

-- Turns an error raised while running spec code into a diagnostic where it is
-- the user's (a Lua error located in the spec); returns nil otherwise.
function spec.user_error(e, chunkname)
  if diag.is_failure(e) then return e end
  if type(e) == "string" then
    local file = chunkname:sub(2)
    local line, msg = e:match("^" .. file:gsub("%p", "%%%0") .. ":(%d+): (.*)$")
    if line then return as_failure({ file = file, line = tonumber(line) }, msg) end
  end
  return nil
end

-- A message handler (for xpcall) around spec code: the user's errors become
-- diagnostics, anything else gets a traceback (loom's own bug).  Errors without
-- a position are the user's when the spec raised them, or a library function it
-- called directly did: error({}), error("x", 0), math.floor("x").
function spec.message_handler(chunkname)
  return function(e)
    local user = spec.user_error(e, chunkname)
    if user then return user end
    local info = debug.getinfo(2, "S")
    if info and info.what == "C" then info = debug.getinfo(3, "S") end
    if info and info.source == chunkname then
      local msg
      if type(e) == "string" then msg = e
      elseif e == nil then msg = "error raised with no message"
      else msg = "error raised with " .. show(e) .. " as its message (error() takes a string)" end
      local where = diag.here()
      if where then return as_failure(where, msg) end
    end
    return debug.traceback(tostring(e), 2)
  end
end

-- Runs the spec at `path`.  Returns the declared spec; raises a diagnostic
-- failure (table) for the user's errors.
function spec.load(path)
  local f, open_err = io.open(path, "rb")
  if not f then diag.fatal(nil, string.format("cannot read spec %s", open_err)) end
  local text = f:read("a")
  f:close()
  local chunkname = "@" .. path
  diag.set_spec(chunkname, text)
  local result = { file = path, text = text }
  local env = make_env(result)
  local chunk, syntax = load(text, chunkname, "t", env)
  if not chunk then
    diag.end_spec()
    local e = spec.user_error(syntax, chunkname)
    if e then error(e, 0) end
    -- an error without a line: Lua refused the text as a whole (an ESC first byte
    -- marks a precompiled chunk, which a spec may not be)
    diag.fatal({ file = path, line = 1 }, text:byte(1) == 0x1b
      and "this is not a Lua text spec (its first byte, ESC, marks precompiled Lua bytecode)"
      or ("the spec cannot be loaded: " .. tostring(syntax)))
  end
  for _, d in ipairs(util.duplicate_keys(text)) do
    diag.error({ file = path, line = d.line }, string.format(
      "'%s' is given twice in this table (first on line %d); Lua would keep only the last", d.key, d.first))
  end
  local ok, e = xpcall(chunk, spec.message_handler(chunkname))
  if not ok then error(diag.spec_error(e), 0) end
  if not result.model and not diag.has_errors() then
    diag.error({ file = path, line = 1 }, "the spec declares no model: add model \"Name\" { inputs = ..., forward = ... }",
      nil, { no_excerpt = true })
  end
  diag.check()
  result.fabric = result.fabric or validate("fabric", {}, FABRIC_SCHEMA, nil)
  return result
end

return spec
