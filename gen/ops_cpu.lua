-- ops_cpu: the C backend's half of the op table — for each op, the kernel calls
-- of its forward and backward (kernels in templates/cpu/), what it saves for the
-- backward, its scratch space, and whether it is a view (no storage, no code).
-- Entries are keyed like gen/ops.lua; an op missing here is reported to the user
-- as not yet supported by the C backend.
--
-- Each rule gets `e`, the C kernels' context (gen/kernels_c.lua, on gen/operands.lua):
--   e.ptr(t) / e.grad(t)      C expressions for a tensor's data / gradient ("NULL" if none)
--   e.acc(t)                  "1": the backward kernel adds into t's gradient; "0": it stores it
--                             (the gradient's first writer; gen/kernels_c.lua)
--   e.acc_params { w, b }     the same for parameter gradients (the kernel's pacc; a C expression)
--   e.save(node, name)        a saved buffer;  e.state(node, name) a module buffer ("NULL" if none)
--   e.counter(node, name)     an int64 counter (num_batches_tracked)
--   e.numel(t) / e.rows(t, k) element count / count without the last k dims, as C expressions
--   e.call(kernel, ...)       "k_<kernel>_<sfx>(args);"
--   e.can_native(t, fmt)      t is stored and read in 16-bit fmt: a kernel over that storage may take it
--   e.native(t) / e.native_grad(t)  its storage / its gradient's, typed in fmt (no widening arena)
--   e.call_native(sfx, kernel, ...)  "k_<kernel>_<sfx>(args);" (a kernel over 16-bit storage)
--   e.lit(x)                  a floating literal of the program's type
--   e.rng_stream(node)        the Philox stream of this node at this step
--   e.training() / e.training_only(x)  the step's training flag / x in training, NULL in eval
local ops_cpu = {}

local function dims_after(shape, first)  -- product of shape[first..]
  local n = 1
  for i = first, #shape do n = n * shape[i] end
  return n
end

local REDUCTION = { none = 0, mean = 1, sum = 2 }

-- An op that behaves differently in training: train() and eval() give each mode's lines.
-- A training program branches on its step's flag; an inference program (loom export,
-- e.inference) has eval's lines alone, so the training-only operands (running statistics
-- it updates, saves, the RNG) are never named there and no shared weight is written.
local function by_mode(e, train, eval)
  if e.inference then return eval() end
  local lines = { false }
  for _, x in ipairs(train()) do lines[#lines + 1] = "    " .. x end
  lines[#lines + 1] = "} else {"
  for _, x in ipairs(eval()) do lines[#lines + 1] = "    " .. x end
  lines[#lines + 1] = "}"
  lines[1] = "if (" .. e.training() .. ") {"
  return lines
end

-- The GEMM ops (linear, conv2d, matmul) whose operands are all read as bf16 (autocast's
-- lower-precision ops at bf16-mixed, every op at bf16-true) call the bf16c kernels:
-- the same float buffers, which hold bf16 values, multiplied in bf16 with float sums
-- (templates/cpu/kernels.h: k_sgemm_bf16), as autocast computes them.
local function gemm_call(e, operands)
  local bf16 = e.sfx == "f32"
  for _, t in ipairs(operands) do
    local c = e.chain(t)
    if (c[2] or c[1]) ~= "bf16" then bf16 = false end
  end
  if not bf16 then return e.call end
  return function(kernel, ...)
    return (e.call(kernel, ...):gsub("^k_" .. kernel .. "_f32%(", "k_" .. kernel .. "_bf16c("))
  end
end

ops_cpu.linear = {
  forward = function(e, n)
    local x, w = n.inputs[1], n.inputs[2]
    return { gemm_call(e, { x, w })("linear_forward", e.ptr(n.out), e.ptr(x), e.ptr(w), n.inputs[3] and e.ptr(n.inputs[3]) or "NULL",
      e.rows(x, 1), w.shape[2], w.shape[1]) }
  end,
  backward = function(e, n)
    local x, w = n.inputs[1], n.inputs[2]
    return { gemm_call(e, { x, w })("linear_backward", e.grad(x), e.grad(w), n.inputs[3] and e.grad(n.inputs[3]) or "NULL",
      e.grad(n.out), e.ptr(x), e.ptr(w), e.rows(x, 1), w.shape[2], w.shape[1], e.acc(x), e.acc_params { w, n.inputs[3] }) }
  end,
}

local function conv_dims(e, n, batch)
  local x, w, a = n.inputs[1], n.inputs[2], n.attrs
  return string.format("{%s, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d}",
    batch or e.batch(x), x.shape[2], x.shape[3], x.shape[4], w.shape[1], w.shape[3], w.shape[4],
    a.stride[1], a.stride[2], a.padding[1], a.padding[2], a.dilation[1], a.dilation[2], a.groups,
    n.out.shape[3], n.out.shape[4])
end

-- A bf16c convolution whose input and output are stored and read as bf16 takes them in
-- that storage (templates/cpu/kernels.h's k_conv2d_*_bf16s: no widening arena around the
-- activations; the weights and bias as the bf16c kernels take them): "bf16s".  One whose
-- output is, but whose input is not (a first layer's float input, rounded to bf16 by the
-- plan in the arena): "bf16o", the output and its gradient in their storage, the input
-- and its gradient as the bf16c kernels take them.  nil: the bf16c kernel, all widened.
local function conv_native(e, n)
  local x = n.inputs[1]
  if gemm_call(e, { x, n.inputs[2] }) == e.call then return nil end
  if not e.can_native(n.out, "bf16") then return nil end
  return e.can_native(x, "bf16") and "bf16s" or "bf16o"
end

ops_cpu.conv2d = {
  -- scratch depends on the thread count, so the program sizes it at start-up
  scratch = function(e, n)
    return string.format("{ const k_conv2d_dims d = %s; grow(&need, k_conv2d_scratch_%s(&d)); }",
      conv_dims(e, n, "BATCH_MAX"), e.sfx)
  end,
  forward = function(e, n)
    local d = e.local_name(n, "dims")
    local f = conv_native(e, n)
    if f then
      local x = n.inputs[1]
      return { string.format("const k_conv2d_dims %s = %s;", d, conv_dims(e, n)),
        e.call_native(f, "conv2d_forward", e.native(n.out), f == "bf16s" and e.native(x) or e.ptr(x), e.ptr(n.inputs[2]),
          n.inputs[3] and e.ptr(n.inputs[3]) or "NULL", e.scratch(), "&" .. d) }
    end
    return { string.format("const k_conv2d_dims %s = %s;", d, conv_dims(e, n)),
      gemm_call(e, { n.inputs[1], n.inputs[2] })("conv2d_forward", e.ptr(n.out), e.ptr(n.inputs[1]), e.ptr(n.inputs[2]),
        n.inputs[3] and e.ptr(n.inputs[3]) or "NULL", e.scratch(), "&" .. d) }
  end,
  backward = function(e, n)
    local d = e.local_name(n, "dims")
    local f = conv_native(e, n)
    if f then
      local x = n.inputs[1]
      local s16 = f == "bf16s"
      return { string.format("const k_conv2d_dims %s = %s;", d, conv_dims(e, n)),
        e.call_native(f, "conv2d_backward", s16 and e.native_grad(x) or e.grad(x), e.grad(n.inputs[2]),
          n.inputs[3] and e.grad(n.inputs[3]) or "NULL", e.native_grad(n.out), s16 and e.native(x) or e.ptr(x), e.ptr(n.inputs[2]),
          e.scratch(), "&" .. d, e.acc(x), e.acc_params { n.inputs[2], n.inputs[3] }) }
    end
    return { string.format("const k_conv2d_dims %s = %s;", d, conv_dims(e, n)),
      gemm_call(e, { n.inputs[1], n.inputs[2] })("conv2d_backward", e.grad(n.inputs[1]), e.grad(n.inputs[2]),
        n.inputs[3] and e.grad(n.inputs[3]) or "NULL", e.grad(n.out), e.ptr(n.inputs[1]), e.ptr(n.inputs[2]),
        e.scratch(), "&" .. d, e.acc(n.inputs[1]), e.acc_params { n.inputs[2], n.inputs[3] }) }
  end,
}

local function pool_dims(e, n)
  local x, a = n.inputs[1], n.attrs
  local dil = a.dilation or { 1, 1 }
  return string.format("{%s, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d}",
    e.batch(x), x.shape[2], x.shape[3], x.shape[4], a.kernel_size[1], a.kernel_size[2],
    a.stride[1], a.stride[2], a.padding[1], a.padding[2], dil[1], dil[2], n.out.shape[3], n.out.shape[4],
    (a.count_include_pad == false) and 0 or 1)
end

-- The 2x2, stride-2 max pool over bf16 storage (templates/cpu/kernels.h's
-- k_max_pool2d_*_bf16) where its input and output are stored and read as bf16: the bf16
-- format, or nil (the float kernel over the widening arena)
local function pool_native(e, n)
  local x, a = n.inputs[1], n.attrs
  if e.sfx ~= "f32" or e.fmt(n.out) ~= "bf16" or #x.shape ~= 4 then return nil end
  local dil = a.dilation or { 1, 1 }
  for i = 1, 2 do
    if a.kernel_size[i] ~= 2 or a.stride[i] ~= 2 or a.padding[i] ~= 0 or dil[i] ~= 1
      or 2 * n.out.shape[2 + i] > x.shape[2 + i] then return nil end
  end
  if not (e.can_native(x, "bf16") and e.can_native(n.out, "bf16")) then return nil end
  return "bf16"
end

ops_cpu.max_pool2d = {
  forward = function(e, n)
    local d = e.local_name(n, "dims")
    local f = pool_native(e, n)
    if f then
      return { string.format("const k_pool2d_dims %s = %s;", d, pool_dims(e, n)),
        e.call_native(f, "max_pool2d_forward", e.native(n.out), e.training_only(e.save(n, "argmax")), e.native(n.inputs[1]), "&" .. d) }
    end
    return { string.format("const k_pool2d_dims %s = %s;", d, pool_dims(e, n)),
      e.call("max_pool2d_forward", e.ptr(n.out), e.training_only(e.save(n, "argmax")), e.ptr(n.inputs[1]), "&" .. d) }
  end,
  backward = function(e, n)
    local d = e.local_name(n, "dims")
    local f = pool_native(e, n)
    if f then
      return { string.format("const k_pool2d_dims %s = %s;", d, pool_dims(e, n)),
        e.call_native(f, "max_pool2d_backward", e.native_grad(n.inputs[1]), e.native_grad(n.out), e.save(n, "argmax"), "&" .. d,
          e.acc(n.inputs[1])) }
    end
    return { string.format("const k_pool2d_dims %s = %s;", d, pool_dims(e, n)),
      e.call("max_pool2d_backward", e.grad(n.inputs[1]), e.grad(n.out), e.save(n, "argmax"), "&" .. d, e.acc(n.inputs[1])) }
  end,
}

ops_cpu.avg_pool2d = {
  forward = function(e, n)
    local d = e.local_name(n, "dims")
    return { string.format("const k_pool2d_dims %s = %s;", d, pool_dims(e, n)),
      e.call("avg_pool2d_forward", e.ptr(n.out), e.ptr(n.inputs[1]), "&" .. d) }
  end,
  backward = function(e, n)
    local d = e.local_name(n, "dims")
    return { string.format("const k_pool2d_dims %s = %s;", d, pool_dims(e, n)),
      e.call("avg_pool2d_backward", e.grad(n.inputs[1]), e.grad(n.out), "&" .. d) }
  end,
}

ops_cpu.batch_norm = {
  forward = function(e, n)
    local x, a = n.inputs[1], n.attrs
    local C, S = x.shape[2], dims_after(x.shape, 3)
    local w = n.inputs[2] and e.ptr(n.inputs[2]) or "NULL"
    local b = n.inputs[3] and e.ptr(n.inputs[3]) or "NULL"
    local momentum = a.momentum == false and e.lit(-1) or e.lit(a.momentum)
    local function train(sync)
      if sync then   -- SyncBatchNorm: the per-channel sums over every rank's batch, then normalize
        local sums = e.local_name(n, "bn_sums")
        return { string.format("double %s[%d];   // SyncBatchNorm: sum x, sum x^2 (C each), count", sums, 2 * C + 1),
          e.call("batch_norm_sums", sums, e.ptr(x), e.batch(x), C, S),
          e.ranks_sum(sums, 2 * C + 1),
          e.call("batch_norm_forward_synced", e.ptr(n.out), e.save(n, "mean"), e.save(n, "invstd"),
            e.state(n, "running_mean"), e.state(n, "running_var"), e.counter(n, "num_batches_tracked"),
            e.ptr(x), w, b, sums, e.batch(x), C, S, e.lit(a.eps), momentum) }
      end
      return { e.call("batch_norm_forward_train", e.ptr(n.out), e.save(n, "mean"), e.save(n, "invstd"),
        e.state(n, "running_mean"), e.state(n, "running_var"), e.counter(n, "num_batches_tracked"),
        e.ptr(x), w, b, e.batch(x), C, S, e.lit(a.eps), momentum) }
    end
    local sync = e.synced(n)
    -- no running statistics: batch statistics in eval too (no state to update), each
    -- rank's own there (torch.nn.SyncBatchNorm syncs in training only)
    if not a.track_running_stats then
      if not sync then return train(false) end
      return by_mode(e, function() return train(true) end, function() return train(false) end)
    end
    return by_mode(e, function() return train(sync) end, function()
      return { e.call("batch_norm_forward_eval", e.ptr(n.out), e.ptr(x), w, b,
        e.state(n, "running_mean"), e.state(n, "running_var"), e.batch(x), C, S, e.lit(a.eps)) }
    end)
  end,
  backward = function(e, n)
    local x = n.inputs[1]
    local C, S = x.shape[2], dims_after(x.shape, 3)
    if e.synced(n) and e.grad_place(x) then   -- (no gradient of x: nothing to sync)
      -- SyncBatchNorm: dx's means of dout and dout*xhat are over every rank's batch; dw
      -- and db stay this rank's (DDP averages them with the other gradients)
      local sums = e.local_name(n, "bn_dsums")
      return { string.format("double %s[%d];   // SyncBatchNorm: sum dout, sum dout*xhat (C each), count", sums, 2 * C + 1),
        e.call("batch_norm_backward_sums", sums, n.inputs[2] and e.grad(n.inputs[2]) or "NULL",
          n.inputs[3] and e.grad(n.inputs[3]) or "NULL", e.grad(n.out), e.ptr(x), e.save(n, "mean"), e.save(n, "invstd"),
          e.batch(x), C, S),
        e.ranks_sum(sums, 2 * C + 1),
        e.call("batch_norm_backward_synced", e.grad(x), e.grad(n.out), e.ptr(x), n.inputs[2] and e.ptr(n.inputs[2]) or "NULL",
          e.save(n, "mean"), e.save(n, "invstd"), sums, e.batch(x), C, S) }
    end
    return { e.call("batch_norm_backward", e.grad(x), n.inputs[2] and e.grad(n.inputs[2]) or "NULL",
      n.inputs[3] and e.grad(n.inputs[3]) or "NULL", e.grad(n.out), e.ptr(x),
      n.inputs[2] and e.ptr(n.inputs[2]) or "NULL", e.save(n, "mean"), e.save(n, "invstd"),
      e.batch(x), C, S, e.acc(x), e.acc_params { n.inputs[2], n.inputs[3] }) }
  end,
}

-- batch norm's chain (gen/fuse.lua's chains): ReLU, then a 2x2 max pool of stride 2,
-- one kernel over memory (k_bn_relu_*): the normalized values and the ReLU's output
-- before a pool are never stored.  Its input, its output and the chain's all in one
-- format: the compute type, or the 16-bit one (the autocasts', bf16-true's), where the
-- kernel rounds the normalized values to it as the unfused ops store them (`narrow`);
-- the parameters in any (converted around the kernel as every operand).  Not
-- SyncBatchNorm (its sums go over the ranks between the halves).
local NARROW = { bf16 = 1, f16 = 2 }   -- k_bn_relu_*'s narrow
local function chain_format(l, t) return l.pp.fmt[t] or l.pp.settings.compute end
function ops_cpu.batch_norm.chain(head, members, q, l)
  local act = chain_format(l, head.out)
  if act ~= l.pp.settings.compute and not NARROW[act] then return false end
  for _, t in ipairs({ head.inputs[1], head.out, q.out }) do
    if chain_format(l, t) ~= act then return false end
  end
  if l.strategy and l.strategy.synced and l.strategy.synced[head] ~= nil then return false end
  if #members == 0 then return q.op == "relu" end
  if #members ~= 1 or q.op ~= "max_pool2d" or #q.out.shape ~= 4 then return false end
  local a, x = q.attrs, q.inputs[1]
  local dil = a.dilation or { 1, 1 }
  for i = 1, 2 do
    if a.kernel_size[i] ~= 2 or a.stride[i] ~= 2 or a.padding[i] ~= 0 or dil[i] ~= 1
      or 2 * q.out.shape[2 + i] > x.shape[2 + i] then return false end
  end
  return true
end

-- the chain's sizes: N, C, H, W (the normalized input's), OH, OW (the chain's output),
-- pool (0 or 1), and its last output (after ReLU or the pool)
local function bn_chain(e, n, members)
  local x, last = n.inputs[1], members[#members].out
  local pool = members[2] ~= nil
  local H = x.shape[3] or 1
  local W = dims_after(x.shape, 4)
  return x, last, pool, string.format("%s, %d, %d, %d, %d, %d, %d, %d", e.batch(x), x.shape[2], H, W,
    pool and last.shape[3] or H, pool and last.shape[4] or W, pool and 1 or 0, NARROW[e.fmt(n.out)] or 0)
end

-- The chain's kernels over 16-bit storage (templates/cpu/kernels_chain.inc's _bf16): where
-- the chain's format is one of these and each of its activation operands is stored and
-- read in it (e.can_native), the kernel reads and writes them there itself; otherwise
-- the float kernel over the widening arena.  Returns the format, or nil.
local NATIVE = { bf16 = true }
local function native_format(e, n, tensors)
  local f = e.fmt(n.out)
  if not NATIVE[f] then return nil end
  for _, t in ipairs(tensors) do
    if not e.can_native(t, f) then return nil end
  end
  return f
end

function ops_cpu.batch_norm.chain_forward(e, n, members)
  local x, last, pool, sizes = bn_chain(e, n, members)
  local a = n.attrs
  local w = n.inputs[2] and e.ptr(n.inputs[2]) or "NULL"
  local b = n.inputs[3] and e.ptr(n.inputs[3]) or "NULL"
  local momentum = a.momentum == false and e.lit(-1) or e.lit(a.momentum)
  local f = native_format(e, n, { x, last })
  local act = f and e.native or e.ptr
  local call = f and function(k, ...) return e.call_native(f, k, ...) end or e.call
  local out, inp = act(last), act(x)
  local function train()
    -- (asked here: an inference program, which has only eval's lines, declares no argmax)
    local argmax = pool and e.training_only(e.save(members[2], "argmax")) or "NULL"
    return { call("bn_relu_forward_train", out, argmax, e.save(n, "mean"), e.save(n, "invstd"),
      e.state(n, "running_mean"), e.state(n, "running_var"), e.counter(n, "num_batches_tracked"),
      inp, w, b, sizes, e.lit(a.eps), momentum) }
  end
  if not a.track_running_stats then return train() end
  return by_mode(e, train, function()
    return { call("bn_relu_forward_eval", out, inp, w, b,
      e.state(n, "running_mean"), e.state(n, "running_var"), sizes, e.lit(a.eps)) }
  end)
end

function ops_cpu.batch_norm.chain_backward(e, n, members)
  local x, last, pool = bn_chain(e, n, members)
  local H, W = x.shape[3] or 1, dims_after(x.shape, 4)
  local f = native_format(e, n, { x, last })
  local act, grad = e.ptr, e.grad
  local call = e.call
  if f then
    act, grad = e.native, e.native_grad
    call = function(k, ...) return e.call_native(f, k, ...) end
  end
  return { call("bn_relu_backward", grad(x), n.inputs[2] and e.grad(n.inputs[2]) or "NULL",
    n.inputs[3] and e.grad(n.inputs[3]) or "NULL", grad(last), act(last),
    pool and e.save(members[2], "argmax") or "NULL", act(x), n.inputs[2] and e.ptr(n.inputs[2]) or "NULL",
    e.save(n, "mean"), e.save(n, "invstd"), e.batch(x), x.shape[2], H, W,
    pool and last.shape[3] or H, pool and last.shape[4] or W, e.acc(x), e.acc_params { n.inputs[2], n.inputs[3] }) }
end

ops_cpu.layer_norm = {
  forward = function(e, n)
    local x = n.inputs[1]
    local k = #n.attrs.normalized_shape
    return { e.call("layer_norm_forward", e.ptr(n.out), e.save(n, "mean"), e.save(n, "rstd"), e.ptr(x),
      n.inputs[2] and e.ptr(n.inputs[2]) or "NULL", n.inputs[3] and e.ptr(n.inputs[3]) or "NULL",
      e.rows(x, k), dims_after(x.shape, #x.shape - k + 1), e.lit(n.attrs.eps)) }
  end,
  backward = function(e, n)
    local x = n.inputs[1]
    local k = #n.attrs.normalized_shape
    return { e.call("layer_norm_backward", e.grad(x), n.inputs[2] and e.grad(n.inputs[2]) or "NULL",
      n.inputs[3] and e.grad(n.inputs[3]) or "NULL", e.grad(n.out), e.ptr(x),
      n.inputs[2] and e.ptr(n.inputs[2]) or "NULL", e.save(n, "mean"), e.save(n, "rstd"),
      e.rows(x, k), dims_after(x.shape, #x.shape - k + 1)) }
  end,
}

-- activations: the backward of relu/sigmoid/tanh reads the output, silu/gelu the input;
-- `stores`: the backward kernel takes acc (stores as the gradient's first writer)
local function activation(name, from_output, extra, stores)
  ops_cpu[name] = {
    forward = function(e, n)
      local args = { e.ptr(n.out), e.ptr(n.inputs[1]), e.numel(n.out) }
      if extra then args[#args + 1] = extra(n) end
      return { e.call(name .. "_forward", table.unpack(args)) }
    end,
    backward = function(e, n)
      local args = { e.grad(n.inputs[1]), e.grad(n.out), from_output and e.ptr(n.out) or e.ptr(n.inputs[1]), e.numel(n.out) }
      if extra then args[#args + 1] = extra(n) end
      if stores then args[#args + 1] = e.acc(n.inputs[1]) end
      return { e.call(name .. "_backward", table.unpack(args)) }
    end,
  }
end
activation("relu", true, nil, true)
activation("sigmoid", true, nil, true)
activation("tanh", true, nil, true)
activation("silu", false, nil, true)
activation("gelu", false, function(n) return n.attrs.approximate == "tanh" and "1" or "0" end, true)

ops_cpu.dropout = {
  forward = function(e, n)
    if n.attrs.p == 0 then
      return { string.format("memcpy(%s, %s, sizeof(%s) * (size_t)(%s));", e.ptr(n.out), e.ptr(n.inputs[1]), e.T, e.numel(n.out)) }
    end
    return by_mode(e, function()
      return { e.call("dropout_forward", e.ptr(n.out), e.ptr(n.inputs[1]), e.numel(n.out), e.lit(n.attrs.p), "m->seed", e.rng_stream(n)) }
    end, function()
      return { string.format("memcpy(%s, %s, sizeof(%s) * (size_t)(%s));", e.ptr(n.out), e.ptr(n.inputs[1]), e.T, e.numel(n.out)) }
    end)
  end,
  backward = function(e, n)
    if n.attrs.p == 0 then
      return { string.format("for (size_t i = 0; i < (size_t)(%s); i++) %s[i] += %s[i];", e.numel(n.out), e.grad(n.inputs[1]), e.grad(n.out)) }
    end
    return { e.call("dropout_backward", e.grad(n.inputs[1]), e.grad(n.out), e.numel(n.out), e.lit(n.attrs.p), "m->seed", e.rng_stream(n)) }
  end,
}

-- a cast the precision pass kept as a kernel (gen/precision.lua); folded casts are views
ops_cpu.cast = {
  forward = function(e, n)
    local x, y = n.inputs[1], n.out
    return { string.format("k_convert_%s_%s(%s, %s, %s);", e.fmt(x), e.fmt(y), e.raw(y), e.raw(x), e.numel(y)) }
  end,
  backward = function(e, n)
    local x, y = n.inputs[1], n.out
    if e.raw_grad(x) == "NULL" then return {} end
    return { string.format("k_accum_convert_%s_%s(%s, %s, %s);", e.fmt(y), e.fmt(x), e.raw_grad(x), e.raw_grad(y), e.numel(y)) }
  end,
}

-- elementwise functions with constants (gen/ops.lua's UNARY): the backward reads the
-- output or the input, as the op table says
for name, op in pairs(require("ops")) do
  if type(op) == "table" and op.consts then
    ops_cpu[name] = {
      forward = function(e, n)
        local a, b = op.consts(n.attrs)
        return { e.call(name .. "_forward", e.ptr(n.out), e.ptr(n.inputs[1]), e.numel(n.out), e.lit(a), e.lit(b)) }
      end,
      backward = function(e, n)
        local a, b = op.consts(n.attrs)
        local src = op.backward_reads_output and e.ptr(n.out) or e.ptr(n.inputs[1])
        return { e.call(name .. "_backward", e.grad(n.inputs[1]), e.grad(n.out), src, e.numel(n.out), e.lit(a), e.lit(b)) }
      end,
    }
  end
end

ops_cpu.dropout2d = {
  forward = function(e, n)
    local x = n.inputs[1]
    local copy = string.format("memcpy(%s, %s, sizeof(%s) * (size_t)(%s));", e.ptr(n.out), e.ptr(x), e.T, e.numel(n.out))
    if n.attrs.p == 0 then return { copy } end
    return by_mode(e, function()
      return { e.call("dropout2d_forward", e.ptr(n.out), e.ptr(x), e.rows(x, #x.shape - 2), dims_after(x.shape, 3), e.lit(n.attrs.p),
        "m->seed", e.rng_stream(n)) }
    end, function() return { copy } end)
  end,
  backward = function(e, n)
    local x = n.inputs[1]
    if n.attrs.p == 0 then
      return { string.format("for (size_t i = 0; i < (size_t)(%s); i++) %s[i] += %s[i];", e.numel(n.out), e.grad(x), e.grad(n.out)) }
    end
    return { e.call("dropout2d_backward", e.grad(x), e.grad(n.out), e.rows(x, #x.shape - 2), dims_after(x.shape, 3), e.lit(n.attrs.p),
      "m->seed", e.rng_stream(n)) }
  end,
}

-- conv1d: the conv2d kernels on a height of 1 (weight (O, I/g, K) is (O, I/g, 1, K))
local function conv1d_dims(e, n, batch)
  local x, w, a = n.inputs[1], n.inputs[2], n.attrs
  return string.format("{%s, %d, 1, %d, %d, 1, %d, 1, %d, 0, %d, 1, %d, %d, 1, %d}",
    batch or e.batch(x), x.shape[2], x.shape[3], w.shape[1], w.shape[3], a.stride[1], a.padding[1], a.dilation[1], a.groups,
    n.out.shape[3])
end
ops_cpu.conv1d = {
  scratch = function(e, n)
    return string.format("{ const k_conv2d_dims d = %s; grow(&need, k_conv2d_scratch_%s(&d)); }", conv1d_dims(e, n, "BATCH_MAX"), e.sfx)
  end,
  forward = function(e, n)
    local d = e.local_name(n, "dims")
    return { string.format("const k_conv2d_dims %s = %s;", d, conv1d_dims(e, n)),
      gemm_call(e, { n.inputs[1], n.inputs[2] })("conv2d_forward", e.ptr(n.out), e.ptr(n.inputs[1]), e.ptr(n.inputs[2]),
        n.inputs[3] and e.ptr(n.inputs[3]) or "NULL", e.scratch(), "&" .. d) }
  end,
  backward = function(e, n)
    local d = e.local_name(n, "dims")
    return { string.format("const k_conv2d_dims %s = %s;", d, conv1d_dims(e, n)),
      gemm_call(e, { n.inputs[1], n.inputs[2] })("conv2d_backward", e.grad(n.inputs[1]), e.grad(n.inputs[2]),
        n.inputs[3] and e.grad(n.inputs[3]) or "NULL", e.grad(n.out), e.ptr(n.inputs[1]), e.ptr(n.inputs[2]),
        e.scratch(), "&" .. d, e.acc(n.inputs[1]), e.acc_params { n.inputs[2], n.inputs[3] }) }
  end,
}

-- transposed convolution: conv2d's sizes seen from the output (gen/ops.lua; kernels_nn.inc)
local function conv_t_dims(e, n, batch)
  local x, y, a = n.inputs[1], n.out, n.attrs
  local nd = #a.kernel_size
  local function hw(shape) if nd == 1 then return 1, shape[3] end return shape[3], shape[4] end
  local function pair(t, one) if nd == 1 then return one, t[1] end return t[1], t[2] end
  local H, W = hw(y.shape)
  local OH, OW = hw(x.shape)
  local KH, KW = pair(a.kernel_size, 1)
  local SH, SW = pair(a.stride, 1)
  local PH, PW = pair(a.padding, 0)
  local DH, DW = pair(a.dilation, 1)
  return string.format("{%s, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d}",
    batch or e.batch(x), y.shape[2], H, W, x.shape[2], KH, KW, SH, SW, PH, PW, DH, DW, a.groups, OH, OW)
end
ops_cpu.conv_transpose = {
  scratch = function(e, n)
    return string.format("{ const k_conv2d_dims d = %s; grow(&need, k_conv2d_scratch_%s(&d)); }", conv_t_dims(e, n, "BATCH_MAX"), e.sfx)
  end,
  forward = function(e, n)
    local d = e.local_name(n, "dims")
    return { string.format("const k_conv2d_dims %s = %s;", d, conv_t_dims(e, n)),
      gemm_call(e, { n.inputs[1], n.inputs[2] })("conv_transpose_forward", e.ptr(n.out), e.ptr(n.inputs[1]), e.ptr(n.inputs[2]),
        n.inputs[3] and e.ptr(n.inputs[3]) or "NULL", e.scratch(), "&" .. d) }
  end,
  backward = function(e, n)
    local d = e.local_name(n, "dims")
    return { string.format("const k_conv2d_dims %s = %s;", d, conv_t_dims(e, n)),
      gemm_call(e, { n.inputs[1], n.inputs[2] })("conv_transpose_backward", e.grad(n.inputs[1]), e.grad(n.inputs[2]),
        n.inputs[3] and e.grad(n.inputs[3]) or "NULL", e.grad(n.out), e.ptr(n.inputs[1]), e.ptr(n.inputs[2]),
        e.scratch(), "&" .. d, e.acc(n.inputs[1]), e.acc_params { n.inputs[2], n.inputs[3] }) }
  end,
}

ops_cpu.group_norm = {
  forward = function(e, n)
    local x = n.inputs[1]
    return { e.call("group_norm_forward", e.ptr(n.out), e.save(n, "mean"), e.save(n, "rstd"), e.ptr(x),
      n.inputs[2] and e.ptr(n.inputs[2]) or "NULL", n.inputs[3] and e.ptr(n.inputs[3]) or "NULL",
      e.batch(x), x.shape[2], dims_after(x.shape, 3), n.attrs.num_groups, e.lit(n.attrs.eps)) }
  end,
  backward = function(e, n)
    local x = n.inputs[1]
    return { e.call("group_norm_backward", e.grad(x), n.inputs[2] and e.grad(n.inputs[2]) or "NULL",
      n.inputs[3] and e.grad(n.inputs[3]) or "NULL", e.grad(n.out), e.ptr(x), n.inputs[2] and e.ptr(n.inputs[2]) or "NULL",
      e.save(n, "mean"), e.save(n, "rstd"), e.batch(x), x.shape[2], dims_after(x.shape, 3), n.attrs.num_groups) }
  end,
}

-- eps = nil: the compute type's machine epsilon (torch.finfo(x.dtype).eps)
ops_cpu.rms_norm = {
  forward = function(e, n)
    local x = n.inputs[1]
    local k = #n.attrs.normalized_shape
    local eps = n.attrs.eps or (e.sfx == "f64" and 2.0 ^ -52 or 2.0 ^ -23)
    return { e.call("rms_norm_forward", e.ptr(n.out), e.save(n, "rstd"), e.ptr(x), n.inputs[2] and e.ptr(n.inputs[2]) or "NULL",
      e.rows(x, k), dims_after(x.shape, #x.shape - k + 1), e.lit(eps)) }
  end,
  backward = function(e, n)
    local x = n.inputs[1]
    local k = #n.attrs.normalized_shape
    return { e.call("rms_norm_backward", e.grad(x), n.inputs[2] and e.grad(n.inputs[2]) or "NULL", e.grad(n.out), e.ptr(x),
      n.inputs[2] and e.ptr(n.inputs[2]) or "NULL", e.save(n, "rstd"), e.rows(x, k), dims_after(x.shape, #x.shape - k + 1)) }
  end,
}

-- adaptive average pooling and upsampling on (NC, H, W); 1-d inputs have H = 1
local function spatial_hw(shape)
  if #shape == 3 then return 1, shape[3] end
  return shape[3], shape[4]
end
ops_cpu.adaptive_avg_pool = {
  forward = function(e, n)
    local x = n.inputs[1]
    local IH, IW = spatial_hw(x.shape)
    local OH, OW = spatial_hw(n.out.shape)
    return { e.call("adaptive_avg_pool_forward", e.ptr(n.out), e.ptr(x), e.rows(x, #x.shape - 2), IH, IW, OH, OW) }
  end,
  backward = function(e, n)
    local x = n.inputs[1]
    local IH, IW = spatial_hw(x.shape)
    local OH, OW = spatial_hw(n.out.shape)
    return { e.call("adaptive_avg_pool_backward", e.grad(x), e.grad(n.out), e.rows(x, #x.shape - 2), IH, IW, OH, OW) }
  end,
}
local function upsample_args(n)
  local x = n.inputs[1]
  local IH, IW = spatial_hw(x.shape)
  local OH, OW = spatial_hw(n.out.shape)
  local sc = n.attrs.scales
  local sh, sw = #x.shape == 3 and 0 or sc[1], sc[#sc]
  return IH, IW, OH, OW, n.attrs.mode == "nearest" and 0 or 1, n.attrs.align_corners and 1 or 0,
    require("util").c_float(sh, ""), require("util").c_float(sw, "")
end
ops_cpu.upsample = {
  forward = function(e, n)
    return { e.call("upsample_forward", e.ptr(n.out), e.ptr(n.inputs[1]), e.rows(n.inputs[1], #n.inputs[1].shape - 2), upsample_args(n)) }
  end,
  backward = function(e, n)
    return { e.call("upsample_backward", e.grad(n.inputs[1]), e.grad(n.out), e.rows(n.inputs[1], #n.inputs[1].shape - 2), upsample_args(n)) }
  end,
}

-- views: same storage, no code
ops_cpu.flatten = {}   -- a view (gen/ops.lua: alias): no kernel
ops_cpu.reshape = {}
ops_cpu.detach = {}

-- cat along `dim` (its layout is the op table's)
local cat_layout = require("ops").cat.layout
ops_cpu.cat = {
  forward = function(e, n)
    local di, inner = cat_layout(n)
    local lines, offset = {}, 0
    for _, x in ipairs(n.inputs) do
      lines[#lines + 1] = e.call("cat_forward", e.ptr(n.out), e.ptr(x), e.outer(x, di), x.shape[di], inner, n.out.shape[di], offset)
      offset = offset + x.shape[di]
    end
    return lines
  end,
  backward = function(e, n)
    local di, inner = cat_layout(n)
    local lines, offset = {}, 0
    for _, x in ipairs(n.inputs) do
      if e.grad(x) ~= "NULL" then
        lines[#lines + 1] = e.call("cat_backward", e.grad(x), e.grad(n.out), e.outer(x, di), x.shape[di], inner, n.out.shape[di], offset,
          e.acc(x))
      end
      offset = offset + x.shape[di]
    end
    return lines
  end,
}

ops_cpu.embedding = {
  forward = function(e, n)
    local w = n.inputs[2]
    return { e.call("embedding_forward", e.ptr(n.out), e.ptr(n.inputs[1]), e.ptr(w), e.numel(n.inputs[1]), w.shape[1], w.shape[2]) }
  end,
  backward = function(e, n)
    local w = n.inputs[2]
    return { e.call("embedding_backward", e.grad(w), e.grad(n.out), e.ptr(n.inputs[1]), e.numel(n.inputs[1]), w.shape[1], w.shape[2],
      n.attrs.padding_idx or -1) }
  end,
}

-- softmax over `dim` of a tensor seen as (OUTER, D, INNER)
local function softmax_layout(e, n)
  local d, D, inner = require("ops").softmax.layout(n)
  return e.outer(n.inputs[1], d), D, inner
end
for _, name in ipairs { "softmax", "log_softmax" } do
  ops_cpu[name] = {
    forward = function(e, n)
      local o, d, i = softmax_layout(e, n)
      return { e.call(name .. "_forward", e.ptr(n.out), e.ptr(n.inputs[1]), o, d, i) }
    end,
    backward = function(e, n)
      local o, d, i = softmax_layout(e, n)
      return { e.call(name .. "_backward", e.grad(n.inputs[1]), e.grad(n.out), e.ptr(n.out), o, d, i) }
    end,
  }
end

-- a loss's per-class weight (PyTorch's `weight`, the node's third input), or NULL
local function class_weight(e, n) return n.inputs[3] and e.ptr(n.inputs[3]) or "NULL" end

ops_cpu.cross_entropy = {
  forward = function(e, n)
    local x, t, a = n.inputs[1], n.inputs[2], n.attrs
    local N, C = e.batch(x), x.shape[2]
    local S = dims_after(x.shape, 3)
    if t.dtype ~= "int64" then
      return { e.call("cross_entropy_soft_forward", e.ptr(n.out), e.save(n, "logp"), e.ptr(x), e.ptr(t), class_weight(e, n), N, C, S,
        e.lit(a.label_smoothing), REDUCTION[a.reduction]) }
    end
    return { e.call("cross_entropy_forward", e.ptr(n.out), e.save(n, "logp"), e.ptr(x), e.ptr(t), class_weight(e, n), N, C, S,
      a.ignore_index, e.lit(a.label_smoothing), REDUCTION[a.reduction]) }
  end,
  backward = function(e, n)
    local x, t, a = n.inputs[1], n.inputs[2], n.attrs
    local N, C = e.batch(x), x.shape[2]
    local S = dims_after(x.shape, 3)
    if t.dtype ~= "int64" then
      return { e.call("cross_entropy_soft_backward", e.grad(x), e.grad(n.out), e.save(n, "logp"), e.ptr(x), e.ptr(t), class_weight(e, n),
        N, C, S, e.lit(a.label_smoothing), REDUCTION[a.reduction]) }
    end
    return { e.call("cross_entropy_backward", e.grad(x), e.grad(n.out), e.save(n, "logp"), e.ptr(x), e.ptr(t), class_weight(e, n),
      N, C, S, a.ignore_index, e.lit(a.label_smoothing), REDUCTION[a.reduction]) }
  end,
}

-- the pointwise losses; smooth_l1 and huber take their beta / delta.  A target that
-- needs a gradient (mse(out, out * 0.5)) gets the rule of a symmetric loss (gen/ops.lua)
-- with input and target swapped.
local LOSS_CONST = { smooth_l1 = "beta", huber = "delta" }
for _, name in ipairs { "bce", "bce_with_logits", "mse", "l1", "smooth_l1", "huber" } do
  -- kernel(pointers..., n, reduction[, beta / delta])
  local function call(e, n, which, ...)
    local args = { ... }
    args[#args + 1] = e.numel(n.inputs[1])
    args[#args + 1] = REDUCTION[n.attrs.reduction]
    if LOSS_CONST[name] then args[#args + 1] = e.lit(n.attrs[LOSS_CONST[name]]) end
    return e.call(name .. which, table.unpack(args))
  end
  ops_cpu[name] = {
    forward = function(e, n)
      return { call(e, n, "_forward", e.ptr(n.out), e.ptr(n.inputs[1]), e.ptr(n.inputs[2])) }
    end,
    backward = function(e, n)
      local x, t = n.inputs[1], n.inputs[2]
      local lines = {}
      if e.grad(x) ~= "NULL" then
        lines[1] = call(e, n, "_backward", e.grad(x), e.grad(n.out), e.ptr(x), e.ptr(t))
      end
      if e.grad(t) ~= "NULL" then
        lines[#lines + 1] = call(e, n, "_backward", e.grad(t), e.grad(n.out), e.ptr(t), e.ptr(x))
      end
      return lines
    end,
  }
end

-- kl_div: 'batchmean' is the sum over the batch size
local function kl_count(e, n)
  if n.attrs.reduction == "batchmean" then return "(double)(" .. e.batch(n.inputs[1]) .. ")" end
  return "(double)(" .. e.numel(n.inputs[1]) .. ")"
end
local function kl_reduction(n) return REDUCTION[n.attrs.reduction == "batchmean" and "mean" or n.attrs.reduction] end
ops_cpu.kl_div = {
  forward = function(e, n)
    return { e.call("kl_div_forward", e.ptr(n.out), e.ptr(n.inputs[1]), e.ptr(n.inputs[2]), e.numel(n.inputs[1]), kl_reduction(n),
      n.attrs.log_target and 1 or 0, kl_count(e, n)) }
  end,
  backward = function(e, n)
    return { e.call("kl_div_backward", e.grad(n.inputs[1]), e.grad(n.inputs[2]), e.grad(n.out), e.ptr(n.inputs[1]), e.ptr(n.inputs[2]),
      e.numel(n.inputs[1]), kl_reduction(n), n.attrs.log_target and 1 or 0, kl_count(e, n)) }
  end,
}

-- accuracy: a metric (train.log), forward only
ops_cpu.accuracy = {
  forward = function(e, n)
    local x, t = n.inputs[1], n.inputs[2]
    local C = #x.shape >= 2 and dims_after(x.shape, 2) or 1
    if t.dtype == "int64" then
      return { e.call("accuracy_forward", e.ptr(n.out), e.ptr(x), e.ptr(t), "NULL", e.batch(x), C, e.lit(0)) }
    end
    return { e.call("accuracy_forward", e.ptr(n.out), e.ptr(x), "NULL", e.ptr(t), e.batch(x), C, e.lit(n.attrs.threshold)) }
  end,
}

ops_cpu.nll_loss = {
  forward = function(e, n)
    local x = n.inputs[1]
    return { e.call("nll_loss_forward", e.ptr(n.out), e.ptr(x), e.ptr(n.inputs[2]), class_weight(e, n), e.batch(x), x.shape[2], dims_after(x.shape, 3),
      n.attrs.ignore_index, REDUCTION[n.attrs.reduction]) }
  end,
  backward = function(e, n)
    local x = n.inputs[1]
    return { e.call("nll_loss_backward", e.grad(x), e.grad(n.out), e.ptr(n.inputs[2]), class_weight(e, n), e.batch(x), x.shape[2], dims_after(x.shape, 3),
      n.attrs.ignore_index, REDUCTION[n.attrs.reduction]) }
  end,
}

---------------------------------------------------------------------------
-- elementwise arithmetic: scalar, equal shapes, bias-like rows, general broadcast

local function same(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local bcast_strides = require("util").bcast_strides

local function ints(list) local t = {} for i, v in ipairs(list) do t[i] = tostring(v) end return table.concat(t, ", ") end

local function binary(opname)
  local commutes = opname == "add" or opname == "mul" or opname == "maximum" or opname == "minimum"
  return {
    forward = function(e, n)
      local a, b = n.inputs[1], n.inputs[2]
      if not b then
        local k = (n.attrs.scalar_left and not commutes) and ("r" .. opname) or opname
        return { e.call(k .. "_scalar_forward", e.ptr(n.out), e.ptr(a), e.lit(n.attrs.scalar), e.numel(n.out)) }
      end
      if same(a.shape, b.shape) then
        return { e.call(opname .. "_forward", e.ptr(n.out), e.ptr(a), e.ptr(b), e.numel(n.out)) }
      end
      if #b.shape == 1 and same(a.shape, n.out.shape) and a.shape[#a.shape] == b.shape[1] then
        return { e.call(opname .. "_row_forward", e.ptr(n.out), e.ptr(a), e.ptr(b), e.rows(a, 1), b.shape[1]) }
      end
      if commutes and #a.shape == 1 and same(b.shape, n.out.shape) and b.shape[#b.shape] == a.shape[1] then
        return { e.call(opname .. "_row_forward", e.ptr(n.out), e.ptr(b), e.ptr(a), e.rows(b, 1), a.shape[1]) }
      end
      local d = e.local_name(n, "bcast")
      return { string.format("const k_bcast_dims %s = { %d, { %s }, { %s }, { %s } };", d, #n.out.shape, ints(n.out.shape),
          ints(bcast_strides(a.shape, n.out.shape)), ints(bcast_strides(b.shape, n.out.shape))),
        e.call(opname .. "_bcast_forward", e.ptr(n.out), e.ptr(a), e.ptr(b), "&" .. d) }
    end,
    backward = function(e, n)
      local a, b = n.inputs[1], n.inputs[2]
      if not b then
        local k = (n.attrs.scalar_left and not commutes) and ("r" .. opname) or opname
        return { e.call(k .. "_scalar_backward", e.grad(a), e.grad(n.out), e.ptr(a), e.lit(n.attrs.scalar), e.numel(n.out)) }
      end
      if same(a.shape, b.shape) then
        return { e.call(opname .. "_backward", e.grad(a), e.grad(b), e.grad(n.out), e.ptr(a), e.ptr(b), e.numel(n.out),
          e.acc(a), e.acc(b)) }
      end
      if #b.shape == 1 and same(a.shape, n.out.shape) and a.shape[#a.shape] == b.shape[1] then
        return { e.call(opname .. "_row_backward", e.grad(a), e.grad(b), e.grad(n.out), e.ptr(a), e.ptr(b), e.rows(a, 1), b.shape[1]) }
      end
      if commutes and #a.shape == 1 and same(b.shape, n.out.shape) and b.shape[#b.shape] == a.shape[1] then
        return { e.call(opname .. "_row_backward", e.grad(b), e.grad(a), e.grad(n.out), e.ptr(b), e.ptr(a), e.rows(b, 1), a.shape[1]) }
      end
      local d = e.local_name(n, "bcast")
      return { string.format("const k_bcast_dims %s = { %d, { %s }, { %s }, { %s } };", d, #n.out.shape, ints(n.out.shape),
          ints(bcast_strides(a.shape, n.out.shape)), ints(bcast_strides(b.shape, n.out.shape))),
        e.call(opname .. "_bcast_backward", e.grad(a), e.grad(b), e.grad(n.out), e.ptr(a), e.ptr(b), "&" .. d) }
    end,
  }
end
for _, name in ipairs { "add", "sub", "mul", "div", "maximum", "minimum", "pow_tensor" } do ops_cpu[name] = binary(name) end

-- where / masked_fill: each operand's broadcast strides in a k_where_dims (a 0-d output as
-- one element); a number's strides are zeros (its pointer is NULL)
local function where_dims(e, n, a, b)
  local d = e.local_name(n, "where")
  local out = #n.out.shape > 0 and n.out.shape or { 1 }
  local function strides(t)
    if not t then local z = {} for i = 1, #out do z[i] = 0 end return z end
    return bcast_strides(t.shape, out)
  end
  return d, string.format("const k_where_dims %s = { %d, { %s }, { %s }, { %s }, { %s } };", d, #out, ints(out),
    ints(strides(n.inputs[1])), ints(strides(a)), ints(strides(b)))
end
-- a, b: the tensors among where's operands (nil where a number stands)
local function where_ab(n)
  if n.attrs.a ~= nil then return nil, n.inputs[2] end
  if n.attrs.b ~= nil then return n.inputs[2], nil end
  return n.inputs[2], n.inputs[3]
end
ops_cpu.where = {
  forward = function(e, n)
    local a, b = where_ab(n)
    local d, decl = where_dims(e, n, a, b)
    return { decl, e.call("where_forward", e.ptr(n.out), e.ptr(n.inputs[1]), a and e.ptr(a) or "NULL", b and e.ptr(b) or "NULL",
      e.lit(n.attrs.a or 0), e.lit(n.attrs.b or 0), "&" .. d) }
  end,
  backward = function(e, n)
    local a, b = where_ab(n)
    local d, decl = where_dims(e, n, a, b)
    return { decl, e.call("where_backward", a and e.grad(a) or "NULL", b and e.grad(b) or "NULL", e.grad(n.out), e.ptr(n.inputs[1]), "&" .. d) }
  end,
}

-- a constant: its elements written into the output at every forward (a static table)
ops_cpu.constant = {
  forward = function(e, n)
    local name, vals = e.local_name(n, "constant"), {}
    for i, v in ipairs(n.attrs.values) do vals[i] = e.lit(v) end
    return { string.format("static const real %s[] = { %s };", name, table.concat(vals, ", ")),
             string.format("memcpy(%s, %s, sizeof %s);", e.ptr(n.out), name, name) }
  end,
}

-- randn / rand (_like): the op's Philox stream at this step (gen/ops.lua's `random`); no backward
ops_cpu.random = {
  forward = function(e, n)
    if e.inference then
      -- an exported library has no run (seed, step) to draw from
      require("diag").fatal(n.where, n.attrs.as .. " in an exported method is not supported yet (pass the noise as an input)")
    end
    return { e.call(n.attrs.dist == "normal" and "randn_forward" or "rand_forward", e.ptr(n.out), e.numel(n.out), "m->seed", e.rng_stream(n)) }
  end,
}

-- expand / tile: the source's size and stride on each of the output's dims (k_tile_*)
local function tile_dims(e, n)
  local x, out = n.inputs[1], n.out.shape
  local k = #out - #x.shape
  local sa, sb, run = {}, {}, 1
  for i = #out, 1, -1 do
    local d = x.shape[i - k]
    if d == nil then sa[i], sb[i] = 0, 1
    else sa[i], sb[i] = run, d; run = run * (d == "B" and 1 or d) end   -- "B" is the outermost dim
  end
  local name = e.local_name(n, "tile")
  return name, string.format("const k_bcast_dims %s = { %d, { %s }, { %s }, { %s } };", name, #out, ints(out), ints(sa), ints(sb))
end
ops_cpu.tile = {
  forward = function(e, n)
    local d, decl = tile_dims(e, n)
    return { decl, e.call("tile_forward", e.ptr(n.out), e.ptr(n.inputs[1]), "&" .. d) }
  end,
  backward = function(e, n)
    local d, decl = tile_dims(e, n)
    return { decl, e.call("tile_backward", e.grad(n.inputs[1]), e.grad(n.out), "&" .. d) }
  end,
}

---------------------------------------------------------------------------
-- data movement: transpose, permute, slice

local function norm(d, n) return d < 0 and d + n or d end
-- the kernel call of a data movement: an int64 tensor (a mask, indices) through the _i64
-- kernels (templates/cpu/kernels_move.inc); it has no gradient
local function move_call(e, x)
  if x.dtype ~= "int64" then return e.call end
  return function(kernel, ...)
    return (e.call(kernel, ...):gsub("^k_" .. kernel .. "_%w+%(", "k_" .. kernel .. "_i64("))
  end
end
-- the elements after a dim (B among them where the batch dim is not first)
local function inner_count(shape, from) return require("util").count_expr(shape, from) end

local function permute_rule(perm_of)
  local function decl(e, n)
    local x = n.inputs[1]
    local shape, perm = e.local_name(n, "shape"), e.local_name(n, "perm")
    return { string.format("const int %s[] = { %s }, %s[] = { %s };", shape, ints(x.shape), perm, ints(perm_of(n))) }, shape, perm
  end
  return {
    forward = function(e, n)
      local lines, shape, perm = decl(e, n)
      lines[#lines + 1] = move_call(e, n.inputs[1])("permute_forward", e.ptr(n.out), e.ptr(n.inputs[1]), #n.inputs[1].shape, shape, perm)
      return lines
    end,
    backward = function(e, n)
      local lines, shape, perm = decl(e, n)
      lines[#lines + 1] = e.call("permute_backward", e.grad(n.inputs[1]), e.grad(n.out), #n.inputs[1].shape, shape, perm,
        e.acc(n.inputs[1]))
      return lines
    end,
  }
end
ops_cpu.transpose = permute_rule(require("ops").transpose.perm)
ops_cpu.permute = permute_rule(require("ops").permute.perm)

ops_cpu.slice = {
  forward = function(e, n)
    local x = n.inputs[1]
    local d = norm(n.attrs.dim, #x.shape) + 1
    return { move_call(e, x)("slice_forward", e.ptr(n.out), e.ptr(x), e.outer(x, d), x.shape[d], inner_count(x.shape, d + 1),
      n.attrs.start_index, n.attrs.step, n.out.shape[d]) }
  end,
  backward = function(e, n)
    local x = n.inputs[1]
    local d = norm(n.attrs.dim, #x.shape) + 1
    return { e.call("slice_backward", e.grad(x), e.grad(n.out), e.outer(x, d), x.shape[d], inner_count(x.shape, d + 1),
      n.attrs.start_index, n.attrs.step, n.out.shape[d]) }
  end,
}

---------------------------------------------------------------------------
-- reductions over one contiguous run of dims, seen as (OUTER, D, INNER)

local function reduce_layout(e, n)
  local first, D, inner = require("ops").sum.layout(n)
  if not first then return "1", e.numel(n.inputs[1]), "1" end
  return e.outer(n.inputs[1], first), D, inner
end
for _, name in ipairs { "sum", "mean" } do
  ops_cpu[name] = {
    forward = function(e, n)
      local o, d, i = reduce_layout(e, n)
      return { e.call(name .. "_forward", e.ptr(n.out), e.ptr(n.inputs[1]), o, d, i) }
    end,
    backward = function(e, n)
      local o, d, i = reduce_layout(e, n)
      return { e.call(name .. "_backward", e.grad(n.inputs[1]), e.grad(n.out), o, d, i) }
    end,
  }
end

-- argmax along a dim, (OUTER, D, INNER) as the sum's layout; NaN wins, as in PyTorch
ops_cpu.argmax = {
  forward = function(e, n)
    local o, d, i = reduce_layout(e, n)
    local x, out = e.ptr(n.inputs[1]), e.ptr(n.out)
    return { string.format("for (size_t o = 0; o < (size_t)(%s); o++) for (size_t i = 0; i < (size_t)(%s); i++) {", o, i),
      string.format("    const real *xs = %s + o * (size_t)(%s) * (size_t)(%s) + i;", x, d, i),
      "    size_t best = 0;",
      "    real bv = xs[0];",
      string.format("    for (size_t k = 1; k < (size_t)(%s); k++) {", d),
      string.format("        real v = xs[k * (size_t)(%s)];", i),
      "        if (v > bv || (v != v && bv == bv)) { bv = v; best = k; }",
      "    }",
      string.format("    %s[o * (size_t)(%s) + i] = (int64_t)best;", out, i),
      "}" }
  end,
}
-- comparisons: 0/1 into an int64 output
local COMPARE = { gt = ">", lt = "<", ge = ">=", le = "<=", eq = "==", ne = "!=" }
ops_cpu.compare = {
  forward = function(e, n)
    local x, y = n.inputs[1], n.inputs[2]
    if not y or same(x.shape, y.shape) then
      local b = y and (e.ptr(y) .. "[j]") or e.lit(n.attrs.scalar)
      return { string.format("for (size_t j = 0; j < (size_t)(%s); j++) %s[j] = %s[j] %s %s;", e.numel(n.out), e.ptr(n.out),
        e.ptr(x), COMPARE[n.attrs.as], b) }
    end
    -- broadcast: row r (all dims but the last) of the output reads a and b at their offsets
    local d, out = e.local_name(n, "bcast"), n.out.shape
    local k = #out
    return { string.format("const k_bcast_dims %s = { %d, { %s }, { %s }, { %s } };", d, k, ints(out),
        ints(bcast_strides(x.shape, out)), ints(bcast_strides(y.shape, out))),
      string.format("for (size_t r = 0; r < (size_t)(%s); r++) {", e.rows(n.out, 1)),
      string.format("    int64_t oa, ob; k_bcast_row_offsets_%s(&%s, r, &oa, &ob);", e.sfx, d),
      string.format("    for (size_t j = 0; j < (size_t)(%s); j++)", tostring(out[k])),
      string.format("        %s[r * (size_t)(%s) + j] = %s[oa + (int64_t)j * %s.sa[%d]] %s %s[ob + (int64_t)j * %s.sb[%d]];",
        e.ptr(n.out), tostring(out[k]), e.ptr(x), d, k - 1, COMPARE[n.attrs.as], e.ptr(y), d, k - 1),
      "}" }
  end,
}

-- amax, var, std, max over a dim; cosine similarity over its dim
local function correction(n) return n.attrs.correction end
ops_cpu.amax = {
  forward = function(e, n)
    local o, d, i = reduce_layout(e, n)
    return { e.call("amax_forward", e.ptr(n.out), e.ptr(n.inputs[1]), o, d, i) }
  end,
  backward = function(e, n)
    local o, d, i = reduce_layout(e, n)
    return { e.call("amax_backward", e.grad(n.inputs[1]), e.grad(n.out), e.ptr(n.out), e.ptr(n.inputs[1]), o, d, i) }
  end,
}
ops_cpu.max_dim = {
  forward = function(e, n)
    local o, d, i = reduce_layout(e, n)
    return { e.call("max_dim_forward", e.ptr(n.out), e.training_only(e.save(n, "index")), e.ptr(n.inputs[1]), o, d, i) }
  end,
  backward = function(e, n)
    local o, d, i = reduce_layout(e, n)
    return { e.call("max_dim_backward", e.grad(n.inputs[1]), e.grad(n.out), e.save(n, "index"), o, d, i) }
  end,
}
for _, name in ipairs { "var", "std" } do
  ops_cpu[name] = {
    forward = function(e, n)
      local o, d, i = reduce_layout(e, n)
      return { e.call(name .. "_forward", e.ptr(n.out), e.ptr(n.inputs[1]), o, d, i, e.lit(correction(n))) }
    end,
    backward = function(e, n)
      local o, d, i = reduce_layout(e, n)
      return { e.call(name .. "_backward", e.grad(n.inputs[1]), e.grad(n.out), e.ptr(n.out), e.ptr(n.inputs[1]), o, d, i,
        e.lit(correction(n))) }
    end,
  }
end
local function cos_layout(e, n)
  local d, D, inner = require("ops").cosine_similarity.layout(n)
  return e.outer(n.inputs[1], d), D, inner
end
ops_cpu.cosine_similarity = {
  forward = function(e, n)
    local o, d, i = cos_layout(e, n)
    return { e.call("cosine_similarity_forward", e.ptr(n.out), e.ptr(n.inputs[1]), e.ptr(n.inputs[2]), o, d, i, e.lit(n.attrs.eps)) }
  end,
  backward = function(e, n)
    local o, d, i = cos_layout(e, n)
    return { e.call("cosine_similarity_backward", e.grad(n.inputs[1]), e.grad(n.inputs[2]), e.grad(n.out), e.ptr(n.inputs[1]),
      e.ptr(n.inputs[2]), o, d, i, e.lit(n.attrs.eps)) }
  end,
}

---------------------------------------------------------------------------
-- matmul (torch.matmul) and attention

local function matmul_dims(e, n)
  local l = require("ops").matmul.layout(n)
  local pad = function(t) local c = {} for i = 1, 4 do c[i] = t[i] or 0 end return c end
  return string.format("{ %d, { %s }, { %s }, { %s }, %s, %s, %s }", l.nb, ints(pad(l.bshape)), ints(pad(l.sa)), ints(pad(l.sb)),
    tostring(l.M), tostring(l.K), tostring(l.N))
end
ops_cpu.matmul = {
  forward = function(e, n)
    local d = e.local_name(n, "mm")
    return { string.format("const k_matmul_dims %s = %s;", d, matmul_dims(e, n)),
      gemm_call(e, { n.inputs[1], n.inputs[2] })("matmul_forward", e.ptr(n.out), e.ptr(n.inputs[1]), e.ptr(n.inputs[2]), "&" .. d) }
  end,
  backward = function(e, n)
    local d = e.local_name(n, "mm")
    return { string.format("const k_matmul_dims %s = %s;", d, matmul_dims(e, n)),
      gemm_call(e, { n.inputs[1], n.inputs[2] })("matmul_backward", e.grad(n.inputs[1]), e.grad(n.inputs[2]), e.grad(n.out), e.ptr(n.inputs[1]), e.ptr(n.inputs[2]), "&" .. d) }
  end,
}

local function count_expr_batch(shape, upto, batch)
  local n = 1
  for i = 1, upto do if shape[i] ~= "B" then n = n * shape[i] end end
  return string.format("%s * %d", batch, n)
end
local function sdpa_sizes(e, n, batch)
  local q, k, v = n.inputs[1].shape, n.inputs[2].shape, n.inputs[3].shape
  local r = #q
  local Bq = batch and count_expr_batch(q, r - 2, batch) or e.outer(n.inputs[1], r - 1)
  return Bq, q[r - 1], k[r - 1], q[r], v[r]
end
ops_cpu.scaled_dot_product_attention = {
  scratch = function(e, n)
    local B, L, S = sdpa_sizes(e, n, "BATCH_MAX")
    return string.format("grow(&need, k_sdpa_scratch_%s(%s, %d, %d));", e.sfx, B, L, S)
  end,
  forward = function(e, n)
    local B, L, S, E, EV = sdpa_sizes(e, n)
    local scale = n.attrs.scale or 1 / math.sqrt(E)
    return { e.call("sdpa_forward", e.ptr(n.out), e.save(n, "att"), e.ptr(n.inputs[1]), e.ptr(n.inputs[2]), e.ptr(n.inputs[3]),
      B, L, S, E, EV, n.attrs.is_causal and 1 or 0, e.lit(scale)) }
  end,
  backward = function(e, n)
    local B, L, S, E, EV = sdpa_sizes(e, n)
    local scale = n.attrs.scale or 1 / math.sqrt(E)
    return { e.call("sdpa_backward", e.grad(n.inputs[1]), e.grad(n.inputs[2]), e.grad(n.inputs[3]), e.scratch(), e.grad(n.out),
      e.ptr(n.inputs[1]), e.ptr(n.inputs[2]), e.ptr(n.inputs[3]), e.save(n, "att"), B, L, S, E, EV,
      n.attrs.is_causal and 1 or 0, e.lit(scale)) }
  end,
}

---------------------------------------------------------------------------
-- `step`: one position of a sampled model's forward (gen/entries.lua's decode step,
-- written into model.c's model_sample_step by gen/emit_c.lua).  The rule writes the
-- output's row at position `t` from its inputs' rows; every tensor that depends on the
-- tokens holds all positions of the window, position-major (gen/entries.lua), so
-- attention reads the earlier positions' keys and values (the cache) where they are.
-- The context `s`:
--   s.row(t) / s.rows(t)   C pointer to tensor t's row at position t / to its position 0
--   s.R(t), s.rest(t)      elements of one row, and its dims (the shape without the batch
--                          and the sequence)
--   s.token()              the token at position t (the model's int64 input)
--   s.param(t)             a tensor of parameters only: { base = C pointer, shape, strides }
--   s.axis(t)              the sequence dim of t (1-based), nil for parameters
--   s.index(sizes, strides, var)  the C offset of element `var` of a row-major
--                          `sizes` in a buffer with `strides` (0: broadcast)
--   s.lit(x), s.T          a literal of the program's type; the window's length
--   s.refuse(node, why)    a shape this step cannot run (an error at the node's line)
local function row_copy(s, n)
  return { string.format("memcpy(%s, %s, sizeof(real) * %d);", s.row(n.out), s.row(n.inputs[1]), s.R(n.out)) }
end
ops_cpu.embedding.step = function(s, n)
  local w = s.param(n.inputs[2])
  local C = n.inputs[2].shape[2]
  return { string.format("memcpy(%s, %s + (size_t)%s * %d, sizeof(real) * %d);", s.row(n.out), w.base, s.token(), C, C) }
end
ops_cpu.dropout.step = row_copy   -- sampling is eval mode: the identity
ops_cpu.reshape.step = row_copy
ops_cpu.flatten.step = row_copy
ops_cpu.cast.step = row_copy
-- (the CUDA backend's steps, gen/ops_cuda.lua, take the same expressions and operands)
local STEP_ACT = {
  relu = "x > 0 ? x : 0", sigmoid = "1 / (1 + exp(-x))", tanh = "tanh(x)", silu = "x / (1 + exp(-x))",
  gelu = "0.5 * x * (1 + erf(x * 0.7071067811865476))",
  gelu_tanh = "0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))",
}
-- an activation's formula of x (double) for node n
function ops_cpu.step_act(n)
  return STEP_ACT[(n.op == "gelu" and n.attrs.approximate == "tanh") and "gelu_tanh" or n.op]
end
for _, name in ipairs { "relu", "sigmoid", "tanh", "silu", "gelu" } do
  ops_cpu[name].step = function(s, n)
    local f = ops_cpu.step_act(n)
    return { string.format("{ const real *x_ = %s; real *y_ = %s;", s.row(n.inputs[1]), s.row(n.out)),
             string.format("  for (int i = 0; i < %d; i++) { double x = x_[i]; y_[i] = (real)(%s); } }", s.R(n.out), f) }
  end
end
ops_cpu.linear.step = function(s, n)
  local x, w, b = n.inputs[1], s.param(n.inputs[2]), n.inputs[3] and s.param(n.inputs[3])
  local outf, inf = n.inputs[2].shape[1], n.inputs[2].shape[2]
  return { string.format("sample_linear(%s, %s, %s, %s, %d, %d, %d);", s.row(n.out), s.row(x), w.base, b and b.base or "NULL",
    s.R(x) // inf, inf, outf) }
end
ops_cpu.matmul.step = function(s, n)
  local a, b = n.inputs[1], s.param(n.inputs[2])
  local K, N = n.inputs[2].shape[1], n.inputs[2].shape[2]
  return { string.format("sample_matmul(%s, %s, %s, %d, %d, %d, %d, %d);", s.row(n.out), s.row(a), b.base,
    s.R(a) // K, K, N, b.strides[1], b.strides[2]) }
end
ops_cpu.layer_norm.step = function(s, n)
  local x, N = n.inputs[1], dims_after(n.attrs.normalized_shape, 1)
  local w, b = n.inputs[2] and s.param(n.inputs[2]), n.inputs[3] and s.param(n.inputs[3])
  return { string.format("sample_layer_norm(%s, %s, %s, %s, %d, %d, %s);", s.row(n.out), s.row(x), w and w.base or "NULL",
    b and b.base or "NULL", s.R(x) // N, N, s.lit(n.attrs.eps)) }
end
ops_cpu.scaled_dot_product_attention.step = function(s, n)
  local q, k, v = n.inputs[1], n.inputs[2], n.inputs[3]
  local E, Ev = q.shape[#q.shape], v.shape[#v.shape]
  local scale = n.attrs.scale or 1 / math.sqrt(E)
  return { string.format("sample_attention(%s, %s, %s, %s, t, %d, %d, %d, %s, m->decode_scratch);", s.row(n.out), s.row(q),
    s.rows(k), s.rows(v), s.R(q) // E, E, Ev, s.lit(scale)) }
end
-- the operands of an elementwise op, each as the C offset of element i of the output's
-- row: a row of the same size, a parameter broadcast over it, or a scalar.  Returns the
-- row's size and the expression of element i (reading s.row's and s.param's pointers,
-- and `t`, the position).
local BINARY_SYM = { add = "+", sub = "-", mul = "*", div = "/" }
function ops_cpu.step_binary(s, n)
  local sym = BINARY_SYM[n.op]
  do
    local out = n.out
    local nout, a_out, R = #out.shape, s.axis(out), s.R(out)
    local function operand(x)
      if s.axis(x) then
        if s.R(x) ~= R then s.refuse(n, "an operand broadcast along a row of positions") end
        return string.format("%s[i]", s.row(x))
      end
      local v = s.param(x)
      local shift = nout - #x.shape
      local strides, sizes, toff = {}, {}, nil
      for i = 1, nout do
        local j = i - shift
        local d = j >= 1 and x.shape[j] or 1
        local st = (j >= 1 and d ~= 1) and v.strides[j] or 0
        if i == a_out then
          if d ~= 1 then toff = string.format(" + (size_t)t * %d", st) end
        elseif out.shape[i] ~= "B" then
          if d ~= 1 and d ~= out.shape[i] then s.refuse(n, "an operand that broadcasts unevenly") end
          sizes[#sizes + 1], strides[#strides + 1] = out.shape[i], st
        end
      end
      return string.format("%s[%s%s]", v.base, s.index(sizes, strides, "i"), toff or "")
    end
    local a, b
    if n.attrs.scalar ~= nil then
      local lit = s.lit(n.attrs.scalar)
      if n.attrs.scalar_left then a, b = lit, operand(n.inputs[1]) else a, b = operand(n.inputs[1]), lit end
    else
      a, b = operand(n.inputs[1]), operand(n.inputs[2])
    end
    return R, string.format("%s %s %s", a, sym, b)
  end
end
for name in pairs(BINARY_SYM) do
  ops_cpu[name].step = function(s, n)
    local y = s.row(n.out)
    local R, expr = ops_cpu.step_binary(s, n)
    return { string.format("{ real *y_ = %s; for (int i = 0; i < %d; i++) y_[i] = %s; }", y, R, expr) }
  end
end
-- a copy of the input's row in another order of its dims (transpose, permute, slice)
local function gather(s, n, sizes, strides, start)
  return { string.format("{ const real *x_ = %s%s; real *y_ = %s; for (int i = 0; i < %d; i++) y_[i] = x_[%s]; }",
    s.row(n.inputs[1]), start ~= 0 and (" + " .. start) or "", s.row(n.out), s.R(n.out), s.index(sizes, strides, "i")) }
end
-- the input's row strides (position-major: the row's dims in order, contiguous)
local function row_strides(s, x)
  local strides, by_dim, run = {}, {}, 1
  local dims = {}
  for i, d in ipairs(x.shape) do if i ~= s.axis(x) and d ~= "B" then dims[#dims + 1] = i end end
  for k = #dims, 1, -1 do by_dim[dims[k]] = run; run = run * x.shape[dims[k]] end
  return by_dim
end
-- transpose, permute and slice as a gather from the input's row: sizes, strides and the
-- start of the output's row in it, or nil for a copy of the row as it is
function ops_cpu.step_gather(s, n)
  local x = n.inputs[1]
  local by_dim = row_strides(s, x)
  local sizes, strides = {}, {}
  if n.op == "slice" then
    local d = (n.attrs.dim % #x.shape) + 1
    for i, size in ipairs(n.out.shape) do
      if i ~= s.axis(n.out) and size ~= "B" then
        sizes[#sizes + 1] = size
        strides[#strides + 1] = by_dim[i] * (i == d and n.attrs.step or 1)
      end
    end
    return sizes, strides, n.attrs.start_index * by_dim[d]
  end
  local perm = require("ops")[n.op].perm(n)
  local identity, last = true, 0
  for i, d in ipairs(perm) do
    if i ~= s.axis(n.out) and n.out.shape[i] ~= "B" then
      sizes[#sizes + 1], strides[#strides + 1] = n.out.shape[i], by_dim[d + 1]
      if d + 1 < last then identity = false end
      last = d + 1
    end
  end
  if identity then return nil end
  return sizes, strides, 0
end
local function gather_step(s, n)
  local sizes, strides, start = ops_cpu.step_gather(s, n)
  if not sizes then return row_copy(s, n) end
  return gather(s, n, sizes, strides, start)
end
ops_cpu.transpose.step, ops_cpu.permute.step, ops_cpu.slice.step = gather_step, gather_step, gather_step

return ops_cpu
