-- graph: traces the model's methods (forward and every other declared one) and
-- the training loss with symbolic tensors, giving one op graph per entry point
-- with every tensor's shape and dtype and every node's spec line.
local diag = require "diag"
local util = require "util"
local nn = require "nn"
local tensor = require "tensor"
local spec_mod = require "spec"
local nninit = require "nninit"

local graph = {}

-- Per-sample shapes of the fields a data source yields; `high` is the bound of an integer
-- field's values where the source knows it (FashionMNIST's classes, Synthetic's randint),
-- else 0.
local function data_fields(sp)
  local data = sp.train and sp.train.data
  if not data then return nil end
  if data.kind == "FashionMNIST" then
    return { { name = "image", shape = { 1, 28, 28 }, dtype = "float", high = 0 },
             { name = "label", shape = {}, dtype = "int64", high = 10 } }
  end
  if data.kind == "Synthetic" then
    local list = {}
    for k, d in pairs(data.args.fields) do list[#list + 1] = { name = k, shape = d.shape, dtype = d.dtype, decl = d, seq = d.seq,
                                                      high = d.dist == "randint" and d.high or 0 } end
    table.sort(list, function(a, b) return a.seq < b.seq end)
    return list
  end
  if data.kind == "Tokens" then
    local T = data.args.context
    return { { name = data.args.inputs, shape = { T }, dtype = "int64", high = 0 },
             { name = data.args.targets, shape = { T }, dtype = "int64", high = 0 } }
  end
  if data.kind == "CSV" then
    -- the input: the chosen columns as floats; the target: a class index, or floats
    local a = data.args
    local target = a.classes and { name = a.targets, shape = {}, dtype = "int64",
                                    high = type(a.classes) == "table" and #a.classes or a.classes }
      or { name = a.targets, shape = { #a.target }, dtype = "float", high = 0 }
    return { { name = a.inputs, shape = { #a.columns }, dtype = "float", high = 0 }, target }
  end
  if data.kind == "ImageFolder" then
    -- the classes are the folders the program finds: their bound is the model's (index_ranges)
    local a = data.args
    return { { name = a.inputs, shape = { a.channels, a.size[1], a.size[2] }, dtype = "float", high = 0 },
             { name = a.targets, shape = {}, dtype = "int64", high = 0 } }
  end
  if data.kind == "Npy" then
    -- shapes and dtypes come from the files' headers, read now
    local list = {}
    for _, name in ipairs(util.sorted_keys(data.args.fields)) do
      local path = data.args.fields[name]
      local h, why = graph.npy_header(path)
      if not h then diag.fatal(data.where, string.format("Npy: field '%s': %s: %s", name, path, why)) end
      local per = {}
      for i = 2, #h.shape do per[#per + 1] = h.shape[i] end
      local kind = h.descr:sub(2)
      local dtype = (kind == "i8" or kind == "i4") and "int64" or "float"
      if not ({ f4 = 1, f8 = 1, u1 = 1, i8 = 1, i4 = 1 })[kind] then
        diag.fatal(data.where, string.format("Npy: %s: dtype '%s' is not supported (float32, float64, uint8, int32, int64)", path, h.descr))
      end
      list[#list + 1] = { name = name, shape = per, dtype = dtype, high = 0, npy = { path = path, descr = h.descr, n = h.shape[1] } }
    end
    return list
  end
  return nil
end

-- The header of a .npy file: { descr = "<f4", shape = {N, ...} }, or nil and why.
function graph.npy_header(path)
  -- a FIFO or a device would block io.open until a writer comes
  local regular = require("loomc").is_regular_file(path)
  if regular == false then return nil, "cannot open: not a regular file" end
  local f = io.open(path, "rb")
  if not f then return nil, "cannot open" end
  local head = f:read(12) or ""
  if head:sub(1, 6) ~= "\x93NUMPY" then f:close(); return nil, "not a .npy file" end
  local major = head:byte(7)
  local len, skip
  if major == 1 then len, skip = string.unpack("<I2", head, 9), 10 else len, skip = string.unpack("<I4", head, 9), 12 end
  f:seek("set", skip)
  local dict = f:read(len) or ""
  f:close()
  local descr = dict:match("'descr'%s*:%s*'([^']+)'")
  local fortran = dict:match("'fortran_order'%s*:%s*(%a+)")
  local shape_text = dict:match("'shape'%s*:%s*(%b())")
  if not descr or not shape_text then return nil, "malformed header" end
  if fortran == "True" then return nil, "fortran_order arrays are not supported" end
  local shape = {}
  for d in shape_text:gmatch("%d+") do shape[#shape + 1] = math.tointeger(tonumber(d)) end
  if #shape == 0 then return nil, "a 0-d array has no samples" end
  return { descr = descr, shape = shape }
end

local function batched(shape)
  local s = { "B" }
  for i, d in ipairs(shape) do s[i + 1] = d end
  return s
end

-- A table of named tensors that refuses unknown names.
local function named_view(what, fields)
  local names = util.sorted_keys(fields)
  return setmetatable({}, {
    __index = function(_, k)
      local v = fields[k]
      if v then return v end
      diag.fatal(nil, string.format("%s has no field '%s'%s (it has: %s)", what, tostring(k),
        util.did_you_mean(tostring(k), names), table.concat(names, ", ")))
    end,
    __newindex = function(_, k) diag.fatal(nil, string.format("cannot assign '%s' on %s", tostring(k), what)) end,
    __pairs = function() return next, fields, nil end,
  })
end

-- Runs `fn(...)` as a trace into a fresh graph; returns the trace.
local function run_trace(name, g, fn, ...)
  local t = { name = name, nodes = {}, ntensors = 0, param_tensors = {} }
  local cache = {}
  nn.set_param_source(function(rec, pname)
    cache[rec] = cache[rec] or {}
    local pt = cache[rec][pname]
    if not pt then
      local prefix = g.prefix_of[rec]
      local entry = g.param_by_name[prefix .. pname]
      pt = tensor.new(entry.shape, "float", { param = entry.name })
      cache[rec][pname] = pt
      t.param_tensors[#t.param_tensors + 1] = pt
    end
    return pt
  end)
  tensor.begin_trace(t)
  local args = table.pack(...)
  local ok, result = xpcall(function() return table.pack(fn(table.unpack(args, 1, args.n))) end,
    spec_mod.message_handler("@" .. g.spec.file))
  tensor.end_trace()
  nn.set_param_source(nil)
  if not ok then error(diag.spec_error(result), 0) end
  t.outputs = result
  return t
end

local function make_inputs(sp)
  if sp.single_input then
    local d = sp.inputs[1].decl
    return tensor.new(batched(d.shape), d.dtype, { input = "x" })
  end
  local fields = {}
  for _, inp in ipairs(sp.inputs) do
    fields[inp.name] = tensor.new(batched(inp.decl.shape), inp.decl.dtype, { input = inp.name })
  end
  return named_view("the model's input", fields)
end

local function describe_output(v)
  if tensor.is(v) then return "a tensor " .. util.shape_str(v.shape) end
  if v == nil then return "nothing" end
  if type(v) == "number" then return "the number " .. tostring(v) end
  if type(v) == "string" then return "the string " .. spec_mod.show(v) end
  return spec_mod.show(v)
end

-- Where a method's result came from: the op that made it, else the function's
-- first line, else `fallback`.
local function result_where(v, fn, fallback)
  if tensor.is(v) and v.node and v.node.call_where then return v.node.call_where end
  local info = type(fn) == "function" and debug.getinfo(fn, "S")
  if info and info.linedefined and info.linedefined > 0 and info.source:sub(2) == fallback.file then
    return { file = fallback.file, line = info.linedefined }
  end
  return fallback
end

-- Whether tensor `t` is computed from a parameter.
local function reaches_param(t)
  local seen, stack = {}, { t }
  while #stack > 0 do
    local x = table.remove(stack)
    if x.param then return true end
    local node = x.node
    if node and not seen[node] then
      seen[node] = true
      for _, input in pairs(node.inputs) do stack[#stack + 1] = input end
    end
  end
  return false
end

function graph.build(sp)
  local g = { spec = sp, model = sp.model, model_rec = nn.record(sp.model), traces = {}, order = {} }
  g.params, g.buffers, g.state, g.prefix_of = nn.named_tensors(sp.model)
  g.param_by_name = {}
  for _, e in ipairs(g.state) do g.param_by_name[e.name] = e end
  -- the generated C names a tensor by util.c_ident: net_0.weight and net.0.weight
  -- would be one variable
  local by_ident, reported = {}, {}
  for _, e in ipairs(g.state) do
    local id = util.c_ident(e.name)
    local first = by_ident[id]
    if first and not reported[e.module] then
      reported[e.module] = true
      diag.error(e.module.where, string.format("the tensors %s and %s would have the same name in the generated C (%s): rename a module",
        util.c_string(first.name), util.c_string(e.name), id), { { where = first.module.where, msg = "the first one's module" } })
    end
    by_ident[id] = by_ident[id] or e
  end
  diag.check()

  -- every declared method of the model, forward first
  local methods = {}
  for name in pairs(g.model_rec.methods) do if name ~= "forward" then methods[#methods + 1] = name end end
  table.sort(methods)
  table.insert(methods, 1, "forward")
  for _, name in ipairs(methods) do g.order[#g.order + 1] = name end
  for _, name in ipairs(g.order) do
    local fn = g.model_rec.methods[name]
    local holder = {}
    local t = run_trace(name, g, function()
      holder.x = make_inputs(sp)
      return fn(sp.model, holder.x)
    end)
    t.input_value = holder.x
    for i = 1, t.outputs.n do
      local v = t.outputs[i]
      if v ~= nil and not tensor.is(v) and type(v) ~= "table" then
        diag.error(result_where(v, fn, g.model_rec.where), string.format("%s returns %s; a method returns tensors",
          name, describe_output(v)))
      end
    end
    g.traces[name] = t
  end
  diag.check()

  -- the training loss: loss(m, batch) over the data source's fields
  -- which declared methods the training step calls (the others have no entry point in a
  -- training program: its backend refuses them, gen/emit_c.lua)
  g.called = {}
  local rec_methods, originals = g.model_rec.methods, {}
  for name, fn in pairs(rec_methods) do
    if name ~= "forward" then
      originals[name] = fn
      rec_methods[name] = function(...) g.called[name] = true; return fn(...) end
    end
  end
  if sp.train and (sp.train.loss or sp.train.training_step) then
    local fields_list = data_fields(sp)
    g.data_fields = fields_list   -- (an Npy source's headers are read once, here)
    local tr = sp.train
    if fields_list then
      local by_name = {}
      for _, f in ipairs(fields_list) do by_name[f.name] = f end
      for _, inp in ipairs(sp.single_input and {} or sp.inputs) do
        local f = by_name[inp.name]
        if not f then
          local names = {}
          for _, x in ipairs(fields_list) do names[#names + 1] = x.name end
          diag.error(inp.decl.where, string.format("model input '%s' is not provided by %s (it gives: %s)%s",
            inp.name, tr.data.kind, table.concat(names, ", "), util.did_you_mean(inp.name, names)))
        elseif util.shape_str(f.shape) ~= util.shape_str(inp.decl.shape) or f.dtype ~= inp.decl.dtype then
          diag.error(inp.decl.where, string.format("model input '%s' is declared %s %s but %s gives %s %s",
            inp.name, inp.decl.dtype, util.shape_str(inp.decl.shape), tr.data.kind, f.dtype, util.shape_str(f.shape)))
        end
      end
      diag.check()
      local function make_batch()
        local fields = {}
        for _, f in ipairs(fields_list) do
          fields[f.name] = tensor.new(batched(f.shape), f.dtype, { input = f.name })
        end
        return named_view("the batch", fields)
      end
      if tr.training_step then
        -- the spec's own step (gen/user_step.lua): one trace and its events
        g.loss, g.step = require("user_step").trace(g, sp, function(name, fn) return run_trace(name, g, fn) end, make_batch)
      end
      local holder = { model_calls = {} }
      local t = not tr.training_step and run_trace("loss", g, function()
        local fields = {}
        for _, f in ipairs(fields_list) do
          fields[f.name] = tensor.new(batched(f.shape), f.dtype, { input = f.name })
        end
        holder.b = named_view("the batch", fields)
        -- the model's calls in the loss: train.log's `out` is the first one's output
        nn.set_call_observer(function(p, results, call_where)
          if p == sp.model then holder.model_calls[#holder.model_calls + 1] = { results = results, where = call_where } end
        end)
        local loss = table.pack(tr.loss(sp.model, holder.b))
        nn.set_call_observer(nil)
        if tr.log then
          -- the metrics: traced after the loss, in the same step (no gradient: autodiff
          -- skips the nodes marked metric)
          holder.first_metric = tensor.node_count() + 1
          local first = holder.model_calls[1]
          nn.set_call_observer(function(p, _, call_where)
            if p == sp.model then
              diag.fatal(call_where, "train.log calls the model again; use its third argument, the model's output in the loss")
            end
          end)
          holder.metrics = tr.log(sp.model, holder.b, table.unpack(first and first.results or {}, 1, first and first.results.n or 0))
          nn.set_call_observer(nil)
        end
        return table.unpack(loss, 1, loss.n)
      end)
      nn.set_call_observer(nil)
      if t then t.input_value = holder.b end
      local out = t and t.outputs[1]
      if not t then
        -- (the training_step was checked as it was traced)
      elseif not tensor.is(out) or #out.shape ~= 0 then
        diag.error(result_where(out, tr.loss, tr.where),
          string.format("train.loss must return a scalar tensor (use a reduction), got %s", describe_output(out)))
      elseif require("ops")[out.node.op].no_grad then
        diag.error(result_where(out, tr.loss, tr.where),
          string.format("train.loss is %s, which has no gradient: log it with train.log and train on a loss", out.node.op))
      elseif not reaches_param(out) then
        diag.error(result_where(out, tr.loss, tr.where), "train.loss does not depend on any parameter of the model: "
          .. "there is nothing to train (does the model have layers, and does the loss use its output?)")
      end
      g.loss = g.loss or t
      if tr.log and t then graph.metrics(g, t, holder) end
      if tr.data.kind == "Tokens" then
        -- the program refuses a token file with a token out of these bounds, so they hold
        -- for every batch: the tokens' bound is the smallest vocabulary they index
        local ranges, vocab = graph.index_ranges(g), 0
        for _, f in ipairs(fields_list) do
          local r = ranges[f.name]
          if r and (vocab == 0 or r.hi < vocab) then vocab = r.hi end
        end
        for _, f in ipairs(fields_list) do f.high = vocab end
      end
    end
  end
  for name, fn in pairs(originals) do rec_methods[name] = fn end
  -- the spec's own initialisation (gen/nninit.lua): what train.init does to each parameter
  if sp.train and sp.train.init then
    local handler = spec_mod.message_handler("@" .. sp.file)
    g.inits = nninit.run(sp.train.init, g.params, function(fn, ...)
      local ok, e = xpcall(fn, handler, ...)
      if not ok then error(diag.spec_error(e), 0) end
    end)
  end
  -- the optimizer's parameter groups: each pattern Lua takes, and matches a parameter
  local opt = sp.train and sp.train.optimizer
  for i, gs in ipairs(opt and opt.args.groups or {}) do
    local label = string.format("%s: groups[%d] (params = %s)", opt.kind, i, util.c_string(gs.params))
    local hits = 0
    for _, p in ipairs(g.params) do
      local ok, hit = pcall(string.find, p.name, gs.params)
      if not ok then
        diag.error(opt.where, string.format("%s is not a Lua pattern: %s", label, (tostring(hit):gsub("^.-:%d+: ", ""))))
        hits = -1
        break
      end
      if hit then hits = hits + 1 end
    end
    if hits == 0 then diag.error(opt.where, label .. " matches no parameter of the model") end
  end
  -- frozen parameters (train.freeze: requires_grad = False): each pattern matches one
  g.frozen = {}
  local freeze = sp.train and sp.train.freeze
  if freeze then
    local fw = diag.key_where(sp.train.where, "freeze") or sp.train.where
    local names = {}
    for _, p in ipairs(g.params) do names[#names + 1] = p.name end
    for i, pat in ipairs(freeze) do
      local hits = 0
      for _, p in ipairs(g.params) do
        local ok, hit = pcall(string.find, p.name, pat)
        if not ok then
          diag.error(fw, string.format("train.freeze[%d]: '%s' is not a Lua pattern: %s", i, pat, (tostring(hit):gsub("^.-:%d+: ", ""))))
          hits = -1
          break
        end
        if hit then g.frozen[p.name] = true; hits = hits + 1 end
      end
      if hits == 0 then
        diag.error(fw, string.format("train.freeze[%d] (%s) matches no parameter of the model; its parameters: %s", i,
          util.c_string(pat), #names > 12 and (table.concat(names, ", ", 1, 12) .. ", ...") or table.concat(names, ", ")))
      end
    end
    local trainable = 0
    for _, p in ipairs(g.params) do if not g.frozen[p.name] then trainable = trainable + 1 end end
    if trainable == 0 and #g.params > 0 then
      diag.error(fw, "train.freeze freezes every parameter of the model: there is nothing to train")
    end
  end
  diag.check()
  diag.end_spec()   -- no spec code runs after the traces
  return g
end

-- train.log's metrics, checked: `holder.metrics` is what log returned, the nodes from
-- `holder.first_metric` on computed them.  Sets t.metrics = { { name, tensor, reduce
-- ("mean", "sum", "max"), where } } in name order and marks those nodes `metric`.
-- Every key the program logs for a metric (train/NAME, train/NAME_epoch, val/NAME,
-- test/NAME) must differ from the built-in ones and from the other metrics'.
-- The log keys each metric of `list` (sorted by name) writes, claimed in `keys` (key ->
-- who logs it already): one that is taken is an error at the metric's line.  `who`:
-- train.log, or fabric.log for a training_step's (gen/user_step.lua)
function graph.claim_metric_keys(list, keys, who)
  for _, m in ipairs(list) do
    for _, k in ipairs { "train/" .. m.name, "train/" .. m.name .. "_epoch", "val/" .. m.name, "test/" .. m.name } do
      if keys[k] then
        diag.error(m.where, string.format("%s: metric '%s' would log %s, which %s; rename it", who, m.name, k, keys[k]))
        break
      end
      keys[k] = "metric '" .. m.name .. "' logs too"
    end
  end
end

function graph.metrics(g, t, holder)
  local tr = g.spec.train
  local result = holder.metrics
  local fallback = result_where(nil, tr.log, tr.where)
  local reduce_where = diag.key_where(tr.where, "log_reduce") or tr.where
  if type(result) ~= "table" or tensor.is(result) or getmetatable(result) ~= nil then
    diag.fatal(result_where(result, tr.log, tr.where),
      string.format("train.log must return a table of metrics { name = scalar tensor, ... }, got %s", describe_output(result)))
  end
  for i = holder.first_metric, #t.nodes do t.nodes[i].metric = true end
  local loss_node = t.outputs[1].node
  local acc = loss_node and require("ops")[loss_node.op].accuracy
  local builtin = "is a built-in metric"
  local keys = { ["train/loss"] = builtin, ["train/loss_epoch"] = builtin, ["train/throughput"] = builtin,
                 ["train/grad_norm"] = builtin, ["val/loss"] = builtin, ["test/loss"] = builtin }
  if acc and acc(loss_node) then keys["val/acc"] = "is the loss's built-in accuracy"; keys["test/acc"] = keys["val/acc"] end
  local list = {}
  for name, v in pairs(result) do
    local where = result_where(v, tr.log, tr.where)
    if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
      diag.error(where, string.format("train.log: metric names are identifiers (letters, digits, _), got %s", spec_mod.show(name)))
    elseif not tensor.is(v) or #v.shape ~= 0 or v.dtype ~= "float" then
      diag.error(where, string.format("train.log: metric '%s' must be a scalar float tensor (use a reduction such as mean), got %s",
        name, describe_output(v)))
    else
      list[#list + 1] = { name = name, tensor = v, reduce = tr.log_reduce[name] or "mean", where = where }
    end
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  graph.claim_metric_keys(list, keys, "train.log")
  for name in pairs(tr.log_reduce) do
    if result[name] == nil then
      local names = {}
      for _, m in ipairs(list) do names[#names + 1] = m.name end
      diag.error(reduce_where, string.format("log_reduce names '%s', which train.log does not return%s", name, util.did_you_mean(name, names)))
    end
  end
  if next(result) == nil then diag.error(fallback, "train.log returns no metric") end
  -- callbacks may monitor a metric's val/NAME or train/NAME_epoch (spec.lua let them through)
  local monitorable, known = {}, {}
  for _, k in ipairs(spec_mod.METRICS) do monitorable[#monitorable + 1] = k; known[k] = true end
  for _, m in ipairs(list) do
    for _, k in ipairs { "val/" .. m.name, "train/" .. m.name .. "_epoch" } do monitorable[#monitorable + 1] = k; known[k] = true end
  end
  local watchers = { table.unpack(tr.callbacks or {}) }
  if tr.scheduler and tr.scheduler.kind == "ReduceLROnPlateau" then watchers[#watchers + 1] = tr.scheduler end
  for _, cb in ipairs(watchers) do
    local mon = cb.args.monitor
    if mon and not known[mon] then
      diag.error(diag.key_where(cb.where, "monitor") or cb.where, string.format("%s: cannot monitor '%s'; the program logs %s%s",
        cb.kind, mon, table.concat(monitorable, ", "), util.did_you_mean(mon, monitorable)))
    end
  end
  diag.check()
  t.metrics = list
end

-- The integer data fields the training graph uses as indices: field name ->
-- { hi = the values' bound, except = a value allowed besides [0, hi), what = their name }
-- (cross_entropy's class-index target with its ignore_index, an embedding's indices).
-- `trace`: another trace than the loss's (the forward's, for an inference program).
function graph.index_ranges(g, trace)
  local ranges = {}
  local function bound(t, hi, except, what)
    if not (t and t.input) then return end
    local r = ranges[t.input]
    if not r or hi < r.hi then ranges[t.input] = { hi = hi, except = except, what = what } end
  end
  trace = trace or g.loss
  for _, node in ipairs(trace and trace.nodes or {}) do
    local x, t = node.inputs and node.inputs[1], node.inputs and node.inputs[2]
    if node.op == "cross_entropy" and t and t.dtype == "int64" then
      bound(t, #x.shape >= 2 and x.shape[2] or x.shape[1], node.attrs.ignore_index, "class index")
    elseif node.op == "embedding" then
      bound(x, t.shape[1], 0, "embedding index")   -- (0 is in range: no exception)
    end
  end
  return ranges
end

-- The model's inputs as fields (the forward's batch: an inference program's inputs), in
-- the spec's order: { name, shape (per sample), dtype, high (an index input's bound:
-- values in [0, high); 0 when it is not an index) }.  A single input is named "x".
function graph.input_fields(g)
  local sp, list = g.spec, {}
  local ranges = graph.index_ranges(g, g.traces.forward)
  for _, inp in ipairs(sp.inputs) do
    local name = sp.single_input and "x" or inp.name
    local r = ranges[name]
    list[#list + 1] = { name = name, shape = inp.decl.shape, dtype = inp.decl.dtype, decl = inp.decl, high = r and r.hi or 0 }
  end
  return list
end

-- Per-sample totals of a trace: forward FLOPs and activation bytes (fp32).
function graph.totals(t)
  local flops, act = 0, 0
  for _, node in ipairs(t.nodes) do
    local op = require("ops")[node.op]
    node.flops = op.flops(node)
    flops = flops + node.flops
    act = act + util.numel(node.out.shape, 1) * (node.out.dtype == "int64" and 8 or 4)
  end
  return flops, act
end

-- A text dump of the traces, for --dump=graph and the shape tests.
function graph.dump(g)
  local out = {}
  for _, name in ipairs(g.order) do
    local t = g.traces[name]
    out[#out + 1] = "method " .. name
    for _, node in ipairs(t.nodes) do
      local ins = {}
      for _, x in ipairs(node.inputs) do
        ins[#ins + 1] = x.param and x.param or ("%" .. x.id)
      end
      out[#out + 1] = string.format("  %%%d = %s(%s) %s %s  -- %s:%d%s", node.out.id, node.op, table.concat(ins, ", "),
        util.shape_str(node.out.shape), node.out.dtype, node.where.file, node.where.line,
        node.module and ("  " .. (g.prefix_of[node.module] or ""):gsub("%.$", "")) or "")
    end
    local outs = {}
    for i = 1, t.outputs.n do
      local v = t.outputs[i]
      outs[#outs + 1] = tensor.is(v) and ("%" .. v.id .. " " .. util.shape_str(v.shape)) or type(v)
    end
    out[#out + 1] = "  return " .. table.concat(outs, ", ")
  end
  return table.concat(out, "\n") .. "\n"
end

return graph
