-- Unit tests of the middle stages on small hand-made specs, called through their module
-- API (gen/precision.lua, gen/autodiff.lua, gen/plan.lua, gen/fuse.lua): which casts fold
-- into which neighbour, which tensors share storage, which nodes form a fuse group and
-- which of their values are stored.  Run by tests/suite_passes.sh:
--   build/lua_unit tests/passes/test_passes.lua
-- Prints its plan ("1..N") and one TAP line per test.
local spec = require "spec"
local graph = require "graph"
local diag = require "diag"
local precision = require "precision"
local autodiff = require "autodiff"
local plan = require "plan"
local fuse = require "fuse"
local ops_cpu = require "ops_cpu"
local ops_cuda = require "ops_cuda"
local unit = dofile((arg[0]:gsub("[^/]*$", "")) .. "lib/unit.lua")
local test, check, eq = unit.test, unit.check, unit.eq



-- A model spec from its body (the model's fields and forward), training with `loss`
-- on Synthetic data of `fields`, traced: the graph (gen/graph.lua).  Line 1 of the file
-- is `model "T" {`, so a field on line k of `body` is on line k + 2; `extra`: more of train's
-- settings (train.log, say).
local function trace(body, loss, fields, extra)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write('model "T" {\n  inputs = { x = Tensor{16} },\n', body, "\n}\n",
    'fabric { accelerator = "cpu", precision = "32-true" }\n',
    "train {\n  data = Synthetic { fields = { x = Tensor{16}, ", fields or "target = Tensor{2}", " }, size = 64 },\n",
    "  batch_size = 16,\n  loss = function(m, b) return ", loss or "mse(m(b), b.target)", " end,\n",
    "  optimizer = SGD { lr = 0.1 },\n  epochs = 1,\n", extra or "", "}\n")
  f:close()
  diag.reset()
  local ok, g = pcall(function() return graph.build(spec.load(path)) end)
  os.remove(path)
  if not ok then error(diag.is_failure(g) and g.text or g, 0) end
  g.path = path
  return g
end

local cpu_alias = function(n) return ops_cpu[n.op].alias end
-- precision (assign), autodiff, precision (fold): the stages before the memory plan
local function lower(g, prec)
  local pp = precision.assign(g.loss, prec)
  local ad = autodiff.differentiate(pp.trace)
  precision.fold(pp, ad, cpu_alias)
  return pp, ad
end

-- the node of `trace` doing `op` on spec line `line` (the n-th such, default the first):
-- a module's op is on the line that declares the module, a function's on its call's line
local function node_at(tr, op, line, n)
  n = n or 1
  for _, node in ipairs(tr.nodes) do
    if node.op == op and node.where and node.where.line == line then
      n = n - 1
      if n == 0 then return node end
    end
  end
  error(string.format("no %s node on line %d", op, line), 2)
end
-- the casts of the plan reading tensor x (into format `to`)
local function cast_of(pp, x, to)
  for _, c in ipairs(pp.casts) do
    if c.node.inputs[1] == x and (not to or c.to == to) then return c end
  end
end

-- the model of tests/precision/shared_input.lua, smaller: the input read by two
-- Linear layers and a LayerNorm; LayerNorm's float32 output read only by Linear c
local SHARED = [[
  a = Linear(16, 8),
  b = Linear(16, 8),
  c = Linear(16, 8),
  pre = LayerNorm(16),
  head = Linear(8, 2),
  forward = function(m, b)
    local h = m.a(b.x) + m.b(b.x) + m.c(m.pre(b.x))
    return m.head(relu(h))
  end,]]
local A, B, C, PRE = 3, 4, 5, 6   -- the lines declaring Linear a, b, c and LayerNorm pre

---------------------------------------------------------------------------- precision
test("precision_32_true_has_no_casts", function()
  local pp = lower(trace(SHARED), "32-true")
  eq(#pp.casts, 0, "casts at 32-true")
  for t, f in pairs(pp.fmt) do if t.dtype == "float" then eq(f, "f32", "format of t" .. t.id) end end
end)

test("precision_fold_kept_cast_read_more_than_three_times", function()
  local g = trace(SHARED)
  local pp = lower(g, "bf16-mixed")
  local x = node_at(pp.trace, "linear", A).inputs[1]   -- Linear a's operand: the input as bf16
  eq(x.node.op, "cast", "Linear a's input is made by")
  local c = cast_of(pp, x.node.inputs[1], "bf16")
  check(c and c.node == x.node, "the input's bf16 cast is not in pp.casts")
  check(x.node.inputs[1].input == "x", "the cast reads the model input")
  -- Linear a and b, forward and backward (4), and LayerNorm's cast back to float32 (1)
  eq(c.reads, 5, "reads of the input's bf16 copy")
  check(not pp.folded[c.node], "a cast read 5 times a step is folded")
  check(c.fate:find("^kept"), "fate: %s", c.fate)
  check(not pp.link[x] and not pp.link[x.node.inputs[1]], "the kept cast's tensors are linked")
end)

test("precision_fold_cast_of_a_cast_composes_into_the_reader", function()
  local pp = lower(trace(SHARED), "bf16-mixed")
  local ln = node_at(pp.trace, "layer_norm", PRE)
  local y = ln.inputs[1]                       -- float32 again, from the bf16 copy
  eq(y.node.op, "cast", "LayerNorm's input is made by")
  eq(pp.fmt[y], "f32", "LayerNorm's input format")
  local src = y.node.inputs[1]
  eq(src.node.op, "cast", "the cast's input is made by")      -- the kept bf16 copy
  check(pp.folded[y.node], "the cast back to float32 is not folded")
  check(pp.link[y] and pp.link[y].src == src, "the float32 view is not linked to the bf16 copy's storage")
  local c = cast_of(pp, src, "f32")
  check(c.fate:find("^composed with the cast before it"), "fate: %s", c.fate)
  eq(c.into, ln, "the cast folds into")
end)

test("precision_fold_narrowing_cast_into_its_producers_store", function()
  local pp = lower(trace(SHARED), "bf16-mixed")
  local ln = node_at(pp.trace, "layer_norm", PRE)
  local lc = node_at(pp.trace, "linear", C)      -- Linear c reads LayerNorm's output as bf16
  local y = lc.inputs[1]
  eq(y.node.op, "cast", "Linear c's input is made by")
  eq(y.node.inputs[1], ln.out, "the cast reads")
  check(pp.folded[y.node], "the cast after LayerNorm is not folded")
  -- LayerNorm's output lives in the cast's (bf16) buffer: the producer stores bf16
  check(pp.link[ln.out] and pp.link[ln.out].src == y, "LayerNorm's output is not stored in the cast's buffer")
  check(not pp.link[y], "the cast's output is linked as well")
  local c = cast_of(pp, ln.out, "bf16")
  eq(c.fate, "folded into the store of its producer", "fate")
  -- (c.into is the traced node here, the one pp.trace's copy was made from)
  check(c.into == ln or c.into == ln.original, "the cast folds into %s, not LayerNorm", c.into.op)
end)

test("precision_fold_weight_casts_into_their_readers_loads", function()
  local g = trace(SHARED)
  local pp = lower(g, "bf16-mixed")
  local n = 0
  for i, line in ipairs { A, B, C } do
    local lin = node_at(pp.trace, "linear", line)
    local w = lin.inputs[2]
    eq(w.node.op, "cast", "Linear " .. i .. "'s weight operand is made by")
    local p = w.node.inputs[1]
    check(p.param, "the weight cast reads a parameter")
    eq(pp.fmt[p], "f32", "a parameter's format at bf16-mixed")
    eq(pp.fmt[w], "bf16", "the weight operand's format")
    check(pp.folded[w.node] and pp.link[w] and pp.link[w].src == p, "weight cast %d is not folded into its reader", i)
    eq(cast_of(pp, p, "bf16").into, lin, "the weight cast folds into")
    n = n + 1
  end
  eq(n, 3, "weight casts checked")
end)

test("precision_fold_a_second_reader_keeps_the_producer_in_float32", function()
  -- LayerNorm's float32 output read by Linear a (as bf16) and by the float32 loss path:
  -- its cast cannot go into LayerNorm's store (the other reader wants float32)
  local g = trace([[
  pre = LayerNorm(16),
  a = Linear(16, 16),
  forward = function(m, b)
    local n = m.pre(b.x)
    return m.a(n) + n
  end,]], "mse(m(b), b.x)", "")
  local pp = lower(g, "bf16-mixed")
  local ln = node_at(pp.trace, "layer_norm", 3)
  local c = cast_of(pp, ln.out, "bf16")
  check(c, "no bf16 cast of LayerNorm's output")
  check(not pp.link[ln.out], "LayerNorm's output is stored in the cast's buffer though it has two readers")
  check(c.fate:find("load of its reader"), "fate: %s", c.fate)
end)

---------------------------------------------------------------------------- plan
---------------------------------------------------------------------------- autodiff
-- train.freeze: a frozen parameter needs no gradient; a frozen first layer (its input is
-- the batch) leaves the backward, a frozen later one computes only its input's gradient
test("autodiff_frozen_parameters_are_pruned", function()
  local g = trace([[
  a = Linear(16, 8),
  b = Linear(8, 2),
  forward = function(m, b) return m.b(relu(m.a(b.x))) end,]])
  local la, lb = node_at(g.loss, "linear", 3), node_at(g.loss, "linear", 4)
  local function in_backward(ad, node)
    for _, n in ipairs(ad.backward) do if n == node then return true end end
    return false
  end
  local all = autodiff.differentiate(g.loss)
  check(in_backward(all, la) and all.grad_inputs[la][2], "without freezing, a's weight gradient is computed")
  local fa = autodiff.differentiate(g.loss, { ["a.weight"] = true, ["a.bias"] = true })
  check(not in_backward(fa, la), "frozen a (its input is the batch) is not in the backward")
  check(not in_backward(fa, node_at(g.loss, "relu", 5)), "nor is the relu after it")
  check(in_backward(fa, lb) and fa.grad_inputs[lb][2] and not fa.grad_inputs[lb][1], "b: its weight's gradient only")
  local fb = autodiff.differentiate(g.loss, { ["b.weight"] = true, ["b.bias"] = true })
  check(in_backward(fb, lb), "frozen b still passes the gradient to its input")
  check(fb.grad_inputs[lb][1] and not fb.grad_inputs[lb][2] and not fb.grad_inputs[lb][3], "b: its input's gradient only")
  check(fb.grad_inputs[la][2], "a below the frozen b still gets its weight gradient")
end)

test("plan_state_parameter_offsets_are_aligned", function()
  local st = plan.state(trace(SHARED))
  local want = {   -- Linear(16, 8): 128 + 8 (16, aligned); LayerNorm(16): 16 + 16; head 16 + 2 (16)
    { "a.weight", 0, 128 }, { "a.bias", 128, 8 }, { "b.weight", 144, 128 }, { "b.bias", 272, 8 },
    { "c.weight", 288, 128 }, { "c.bias", 416, 8 }, { "pre.weight", 432, 16 }, { "pre.bias", 448, 16 },
    { "head.weight", 464, 16 }, { "head.bias", 480, 2 },
  }
  eq(#st.params, #want, "parameters")
  for i, w in ipairs(want) do
    eq(st.params[i].name, w[1], "parameter " .. i)
    eq(st.params[i].offset, w[2], w[1] .. " offset")
    eq(st.params[i].numel, w[3], w[1] .. " numel")
  end
  eq(st.nparams, 496, "parameter buffer elements")
end)

test("plan_views_and_folded_casts_share_storage", function()
  local g = trace([[
  a = Linear(16, 8),
  b = Linear(8, 2),
  forward = function(m, b)
    return m.b(reshape(relu(m.a(b.x)), -1, 2, 4):reshape(-1, 8))
  end,]])
  local pp, ad = lower(g, "bf16-mixed")
  local p = plan.activations(pp.trace, ad, 16, pp)
  local view = node_at(pp.trace, "reshape", 6, 2)
  check(p.acts[view.out].source == view.inputs[1], "reshape's output is not a view of its input")
  check(p.grads[view.out] and p.grads[view.out].source == view.inputs[1], "reshape's gradient is not its input's")
  local folded = 0
  for _, c in ipairs(pp.casts) do
    local x, y = c.node.inputs[1], c.node.out
    if pp.link[y] then
      folded = folded + 1
      check(p.acts[y].source == x, "a cast folded into its reader has storage of its own")
    elseif pp.link[x] then
      folded = folded + 1
      check(p.acts[x].source == y, "a producer folded into its cast's store has storage of its own")
    end
  end
  check(folded >= 3, "only %d folded casts (the input's and two weights' at least)", folded)
end)

test("plan_activation_buffers_do_not_overlap_and_have_their_format", function()
  local pp, ad = lower(trace(SHARED), "bf16-mixed")
  local p = plan.activations(pp.trace, ad, 16, pp)
  local ranges = {}
  for t, e in pairs(p.acts) do
    if not e.source and e.arena == "acts" and t.dtype == "float" then
      eq(e.fmt, pp.fmt[t], "t" .. t.id .. "'s buffer format")
      local per, batched = plan.sizes(t.shape)
      eq(e.numel, batched and per * 16 or per, "t" .. t.id .. "'s elements")
      eq(e.offset % 64, 0, "t" .. t.id .. "'s offset is 64-byte aligned")
      ranges[#ranges + 1] = { e.offset, e.offset + e.numel * precision.FORMATS[e.fmt].bytes, t }
    end
  end
  table.sort(ranges, function(a, b) return a[1] < b[1] end)
  for i = 2, #ranges do
    check(ranges[i][1] >= ranges[i - 1][2], "t%d [%d, %d) overlaps t%d [%d, %d)", ranges[i][3].id, ranges[i][1],
      ranges[i][2], ranges[i - 1][3].id, ranges[i - 1][1], ranges[i - 1][2])
  end
  check(#ranges >= 8, "only %d activation buffers", #ranges)
  check(p.nacts >= ranges[#ranges][2], "the arena (%d bytes) ends before its last buffer", p.nacts)
  -- the model's input needs no gradient; the parameters' gradients are in the state's layout
  local x = node_at(pp.trace, "linear", A).inputs[1].node.inputs[1]
  check(not p.grads[x], "the input has an activation gradient")
end)

---------------------------------------------------------------------------- fuse
-- the CUDA backend's hooks (gen/emit_cuda.lua): pointwise ops by their scalar
-- description; linear's epilogue takes a ReLU
local function fuse_plan(pp, ad, opts)
  local alias = function(n) return ops_cuda[n.op] and ops_cuda[n.op].alias end
  return fuse.plan(pp.trace, pp, ad, alias,
    function(n)
      local r = ops_cuda[n.op]
      if r and r.pointwise and not pp.folded[n] then return r.pointwise(n) end
    end,
    function(n, q)
      local r = ops_cuda[n.op]
      if not r or not r.tail then return nil end
      if r.tail == "epilogue" and q and q.op ~= "relu" then return nil end
      return r.tail
    end, opts)
end
local function ops_of(grp)
  local names = {}
  for _, m in ipairs(fuse.nodes(grp)) do names[#names + 1] = m.op end
  return table.concat(names, "+")
end

local CHAIN = [[
  a = Linear(16, 32),
  c = Linear(32, 2),
  head = Linear(32, 2),
  forward = function(m, b)
    local u = m.a(b.x)
    local s = silu(2 - tanh(u) * 0.5)
    local z = relu(s) / 3
    return m.head(z) + m.c(s)
  end,]]

test("fuse_chain_is_one_group_until_a_second_reader", function()
  local pp, ad = lower(trace(CHAIN), "32-true")
  local fz = fuse_plan(pp, ad)
  local tanh = node_at(pp.trace, "tanh", 8)
  local grp = fz.group_of[tanh]
  check(grp, "tanh is in no group")
  eq(grp.kind, "pointwise", "the chain's kind")
  -- silu's output has two readers (relu in the chain, Linear c): the chain goes on through
  -- relu and the division, and silu's value is stored
  eq(ops_of(grp), "tanh+mul+sub+silu+relu+div", "the chain")
  eq(grp.first, tanh, "the chain runs at")
  local silu = node_at(pp.trace, "silu", 8)
  eq(grp.stored[fz.resolve(silu.out)], "read by linear outside the group", "silu's output")
  local mul = node_at(pp.trace, "mul", 8)
  check(grp.register[fz.resolve(mul.out)], "the mul's output is stored (only the chain reads it)")
  local div = node_at(pp.trace, "div", 9)
  check(grp.stored[fz.resolve(div.out)], "the chain's last value (read by Linear head) lives in registers")
end)

-- train.log's metrics are ops of the same forward; a pointwise one reading the step's chain
-- (abs of the model's output) stays out of the chain's group, so that the step's kernels
-- are the same with and without `log`
test("fuse_keeps_train_log_metrics_out_of_the_steps_groups", function()
  local body = [[
  a = Linear(16, 2),
  forward = function(m, b) return tanh(m.a(b.x)) * 2 end,]]
  local g = trace(body, nil, nil, "  log = function(m, b, out) return { size = mean(abs(out)), step = mean(abs(out) * 3) } end,\n")
  local pp, ad = lower(g, "32-true")
  local fz = fuse_plan(pp, ad)
  eq(ops_of(fz.group_of[node_at(pp.trace, "tanh", 4)]), "tanh+mul", "the step's chain")
  local abs = node_at(pp.trace, "abs", 13)
  check(abs.metric, "abs is a metric's node")
  -- the metrics' own chain (abs, then mul) is one group of metric nodes
  eq(ops_of(fz.group_of[abs]), "abs", "the first metric's abs")
  eq(ops_of(fz.group_of[node_at(pp.trace, "abs", 13, 2)]), "abs+mul", "the second metric's chain")
end)

test("fuse_linear_relu_is_an_epilogue_group", function()
  local g = trace([[
  a = Linear(16, 32),
  head = Linear(32, 2),
  forward = function(m, b) return m.head(relu(m.a(b.x))) end,]])
  local pp, ad = lower(g, "32-true")
  local fz = fuse_plan(pp, ad)
  local lin = node_at(pp.trace, "linear", 3)
  local relu = node_at(pp.trace, "relu", 5)
  local grp = fz.group_of[relu]
  check(grp and grp == fz.group_of[lin], "linear and relu are not one group")
  eq(grp.kind, "tail", "kind")
  check(grp.epilogue, "linear + relu is not an epilogue")
  eq(grp.head, lin, "the group's head")
  eq(ops_of(grp), "linear+relu", "the group")
  check(grp.register[fz.resolve(lin.out)], "the pre-activation is stored (only ReLU reads it)")
  check(grp.stored[fz.resolve(relu.out)], "ReLU's output (read by Linear head) is not stored")
end)

test("fuse_epilogue_dissolves_when_the_pre_activation_is_read_elsewhere", function()
  local g = trace([[
  a = Linear(16, 32),
  head = Linear(32, 2),
  forward = function(m, b)
    local u = m.a(b.x)
    return m.head(relu(u) + u)
  end,]])
  local pp, ad = lower(g, "32-true")
  local fz = fuse_plan(pp, ad)
  local lin = node_at(pp.trace, "linear", 3)
  check(not fz.group_of[lin], "linear is in a group though its output is read by the add")
  local relu = node_at(pp.trace, "relu", 7)
  check(fz.group_of[relu], "relu is in no group")
  eq(fz.group_of[relu].kind, "pointwise", "relu's group")
end)

test("fuse_broadcast_operand_with_a_gradient_stays_a_singleton", function()
  local g = trace([[
  a = Linear(16, 2),
  forward = function(m, b)
    return sigmoid(m.a(b.x) * m.a.bias)
  end,]])
  local pp, ad = lower(g, "32-true")
  local fz = fuse_plan(pp, ad)
  local mul = node_at(pp.trace, "mul", 5)
  local grp = fz.group_of[mul]
  check(grp, "the mul is in no group")
  eq(#fuse.nodes(grp), 1, "nodes in the broadcast mul's group")
  check(fz.group_of[node_at(pp.trace, "sigmoid", 5)] ~= grp, "sigmoid joined the broadcast mul")
end)

test("fuse_no_fuse_leaves_every_group_a_singleton", function()
  local pp, ad = lower(trace(CHAIN), "32-true")
  local fz = fuse_plan(pp, ad, { no_fuse = true })
  check(#fz.groups > 0, "no groups at all")
  for _, grp in ipairs(fz.groups) do eq(#fuse.nodes(grp), 1, "nodes of a group under no_fuse (" .. ops_of(grp) .. ")") end
end)

---------------------------------------------------------------------------- CPU chains
-- gen/fuse.lua's chains with ops_cpu's rules, as the plan stage makes them
local function cpu_chains(pp)
  return fuse.chains(pp.trace, pp, cpu_alias, function(head, members, q)
    local rule = ops_cpu[head.op] and ops_cpu[head.op].chain
    return rule ~= nil and rule(head, members, q, { pp = pp }) or false
  end)
end
local BN_RELU = [[
  a = Linear(16, 8),
  bn = BatchNorm1d(8),
  head = Linear(8, 2),
  forward = function(m, b) return m.head(relu(m.bn(m.a(b.x)))) end,]]

test("cpu_chain_batch_norm_relu_is_one_group", function()
  local pp, ad = lower(trace(BN_RELU), "32-true")
  local fz = cpu_chains(pp)
  local bn = node_at(pp.trace, "batch_norm", 4)
  local grp = fz.group_of[bn]
  check(grp, "batch_norm is in no chain")
  eq(grp.kind, "chain", "its kind")
  eq(ops_of(grp), "batch_norm+relu", "the chain")
  check(grp.register[bn.out], "the normalized values are stored")
  check(grp.stored[grp.members[1].out], "the ReLU's output (read by Linear head) is not stored")
  -- the plan: the chain's backward (at batch_norm's) reads the ReLU's output gradient and
  -- writes the Linear's: their slots must not overlap; the member's backward writes nothing
  local p = plan.activations(pp.trace, ad, 16, pp, { backend = "cpu", reuse = true, fused = fz })
  local dy, dx = p.grads[grp.members[1].out], p.grads[bn.inputs[1]]
  check(dy.offset + dy.numel * 4 <= dx.offset or dx.offset + dx.numel * 4 <= dy.offset,
    "the chain's output gradient [%d, +%d) overlaps its input's [%d, +%d)", dy.offset, dy.numel * 4, dx.offset, dx.numel * 4)
  check(not p.first[grp.members[1]], "the ReLU's backward writes a gradient first")
  check(p.first[bn] and p.first[bn][bn.inputs[1]] == 1, "the chain's backward does not store the Linear's gradient")
end)

test("cpu_chain_stops_at_a_second_reader", function()
  local body = [[
  a = Linear(16, 8),
  bn = BatchNorm1d(8),
  head = Linear(8, 2),
  forward = function(m, b) local h = m.bn(m.a(b.x)) return m.head(relu(h) + h) end,]]
  local pp = lower(trace(body), "32-true")
  eq(#cpu_chains(pp).groups, 0, "chains with the normalized values read twice")
end)

-- in 16 bits (bf16-true's tensors, the autocasts' after a lower-precision Linear) the
-- chain is one group too: its kernel rounds the normalized values (ops_cpu's narrow)
test("cpu_chain_in_16_bit_formats", function()
  for _, prec in ipairs { "bf16-true", "bf16-mixed", "16-mixed" } do
    local pp = lower(trace(BN_RELU), prec)
    local bn = node_at(pp.trace, "batch_norm", 4)
    local want = prec == "16-mixed" and "f16" or "bf16"
    eq(pp.fmt[bn.out], want, prec .. ": the normalized values' format")
    local fz = cpu_chains(pp)
    eq(#fz.groups, 1, prec .. ": chains")
    eq(ops_of(fz.group_of[bn]), "batch_norm+relu", prec .. ": the chain")
  end
end)

-- PyTorch's nn.Sequential(a, b, c) and the table form Sequential { a, b, c }: the same
-- module, printed and named alike (net.0.weight, ...)
test("spec_sequential_takes_modules_as_arguments", function()
  local inspect = require "inspect"
  local function text(net)
    return inspect.text(trace("  net = " .. net .. ",\n  forward = function(m, b) return m.net(b.x) end,"))
  end
  local args = text("Sequential(Linear(16, 8), Tanh(), Linear(8, 2))")
  eq(args, text("Sequential { Linear(16, 8), Tanh(), Linear(8, 2) }"), "the two forms")
  check(args:find("(2): Linear(in_features=8, out_features=2, bias=True)", 1, true) and args:find("net.2.weight", 1, true),
    "PyTorch's names: " .. args)
end)

unit.run()
