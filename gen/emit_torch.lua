-- emit_torch: the spec as a PyTorch module file (model.py), for interop and parity.
-- Submodules are PyTorch's own classes with the spec's arguments, so the module
-- prints, names its parameters and loads a loom checkpoint exactly as the spec's
-- model; each method's body is the traced graph written as PyTorch calls.
local util = require "util"
local diag = require "diag"
local nn = require "nn"

local emit_torch = {}

local function pyrepr(v) return util.pyrepr(v) end
local function pybool(v) return v and "True" or "False" end

-- A pooling argument as the user passed it (2 stays 2, a pair stays a tuple), so
-- PyTorch prints the module as loom does.
local function pool_arg(raw, name, pair, default)
  local r = raw[name]
  if r == nil then r = default end
  if math.type(r) == "integer" then return tostring(r) end
  return pyrepr(pair)
end

-- A number as the user passed it (PyTorch prints 1 and 1.0 differently)
local function num(raw, name, a)
  local r = raw[name]
  if math.type(r) == "integer" then return tostring(r) end
  local v = a[name]
  if math.type(v) == "integer" then return tostring(v) end
  return util.pyfloat(v)
end

-- Constructor call of a built-in module with the spec's arguments.
local CTORS = {
  Linear = function(a) return string.format("nn.Linear(%d, %d, bias=%s)", a.in_features, a.out_features, pybool(a.bias)) end,
  Conv2d = function(a)
    local pad = type(a.padding) == "string" and ("'" .. a.padding .. "'") or pyrepr(a.padding)
    return string.format("nn.Conv2d(%d, %d, %s, stride=%s, padding=%s, dilation=%s, groups=%d, bias=%s)", a.in_channels,
      a.out_channels, pyrepr(a.kernel_size), pyrepr(a.stride), pad, pyrepr(a.dilation), a.groups, pybool(a.bias))
  end,
  MaxPool2d = function(a, raw)
    return string.format("nn.MaxPool2d(%s, stride=%s, padding=%s, dilation=%s, ceil_mode=%s)", pool_arg(raw, "kernel_size", a.kernel_size),
      pool_arg(raw, "stride", a.stride, raw.kernel_size), pool_arg(raw, "padding", a.padding, 0), pool_arg(raw, "dilation", a.dilation, 1),
      pybool(a.ceil_mode))
  end,
  MaxPool1d = function(a, raw)
    return string.format("nn.MaxPool1d(%s, stride=%s, padding=%s, dilation=%s, ceil_mode=%s)", pool_arg(raw, "kernel_size", a.kernel_size),
      pool_arg(raw, "stride", a.stride, raw.kernel_size), pool_arg(raw, "padding", a.padding, 0), pool_arg(raw, "dilation", a.dilation, 1),
      pybool(a.ceil_mode))
  end,
  AvgPool2d = function(a, raw)
    return string.format("nn.AvgPool2d(%s, stride=%s, padding=%s, ceil_mode=%s, count_include_pad=%s)", pool_arg(raw, "kernel_size", a.kernel_size),
      pool_arg(raw, "stride", a.stride, raw.kernel_size), pool_arg(raw, "padding", a.padding, 0), pybool(a.ceil_mode), pybool(a.count_include_pad))
  end,
  BatchNorm1d = function(a) return string.format("nn.BatchNorm1d(%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s)",
    a.num_features, util.pyfloat(a.eps), a.momentum == false and "None" or util.pyfloat(a.momentum), pybool(a.affine), pybool(a.track_running_stats)) end,
  BatchNorm2d = function(a) return string.format("nn.BatchNorm2d(%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s)",
    a.num_features, util.pyfloat(a.eps), a.momentum == false and "None" or util.pyfloat(a.momentum), pybool(a.affine), pybool(a.track_running_stats)) end,
  LayerNorm = function(a) return string.format("nn.LayerNorm(%s, eps=%s, elementwise_affine=%s)", pyrepr(a.normalized_shape),
    util.pyfloat(a.eps), pybool(a.elementwise_affine)) end,
  Embedding = function(a) return string.format("nn.Embedding(%d, %d%s)", a.num_embeddings, a.embedding_dim,
    a.padding_idx and (", padding_idx=" .. a.padding_idx) or "") end,
  Dropout = function(a) return string.format("nn.Dropout(p=%s, inplace=%s)", util.pyfloat(a.p), pybool(a.inplace)) end,
  Flatten = function(a) return string.format("nn.Flatten(%d, %d)", a.start_dim, a.end_dim) end,
  ReLU = function(a) return string.format("nn.ReLU(inplace=%s)", pybool(a.inplace)) end,
  SiLU = function(a) return string.format("nn.SiLU(inplace=%s)", pybool(a.inplace)) end,
  Sigmoid = function() return "nn.Sigmoid()" end,
  Tanh = function() return "nn.Tanh()" end,
  GELU = function(a) return string.format("nn.GELU(approximate='%s')", a.approximate) end,
  Softmax = function(a) return string.format("nn.Softmax(dim=%s)", a.dim == nil and "None" or tostring(a.dim)) end,
  LogSoftmax = function(a) return string.format("nn.LogSoftmax(dim=%s)", a.dim == nil and "None" or tostring(a.dim)) end,
  LeakyReLU = function(a, raw) return string.format("nn.LeakyReLU(%s, inplace=%s)", num(raw, "negative_slope", a), pybool(a.inplace)) end,
  ELU = function(a, raw) return string.format("nn.ELU(alpha=%s, inplace=%s)", num(raw, "alpha", a), pybool(a.inplace)) end,
  Mish = function(a) return string.format("nn.Mish(inplace=%s)", pybool(a.inplace)) end,
  Softplus = function(a, raw) return string.format("nn.Softplus(beta=%s, threshold=%s)", num(raw, "beta", a), num(raw, "threshold", a)) end,
  Hardswish = function(a) return string.format("nn.Hardswish(inplace=%s)", pybool(a.inplace)) end,
  ReLU6 = function(a) return string.format("nn.ReLU6(inplace=%s)", pybool(a.inplace)) end,
  Hardtanh = function(a, raw) return string.format("nn.Hardtanh(%s, %s, inplace=%s)", num(raw, "min_val", a), num(raw, "max_val", a),
    pybool(a.inplace)) end,
  Identity = function() return "nn.Identity()" end,
  Dropout2d = function(a, raw) return string.format("nn.Dropout2d(p=%s, inplace=%s)", num(raw, "p", a), pybool(a.inplace)) end,
  GroupNorm = function(a, raw) return string.format("nn.GroupNorm(%d, %d, eps=%s, affine=%s)", a.num_groups, a.num_channels,
    num(raw, "eps", a), pybool(a.affine)) end,
  InstanceNorm1d = function(a, raw) return string.format("nn.InstanceNorm1d(%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s)",
    a.num_features, num(raw, "eps", a), a.momentum == false and "None" or num(raw, "momentum", a), pybool(a.affine), pybool(a.track_running_stats)) end,
  InstanceNorm2d = function(a, raw) return string.format("nn.InstanceNorm2d(%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s)",
    a.num_features, num(raw, "eps", a), a.momentum == false and "None" or num(raw, "momentum", a), pybool(a.affine), pybool(a.track_running_stats)) end,
  RMSNorm = function(a, raw) return string.format("RMSNorm(%s, eps=%s, elementwise_affine=%s)", pyrepr(a.normalized_shape),
    a.eps == nil and "None" or num(raw, "eps", a), pybool(a.elementwise_affine)) end,
  AdaptiveAvgPool2d = function(a, raw) return string.format("nn.AdaptiveAvgPool2d(%s)", pool_arg(raw, "output_size", a.output_size)) end,
  AdaptiveAvgPool1d = function(a) return string.format("nn.AdaptiveAvgPool1d(%d)", a.output_size) end,
  Upsample = function(a, raw)
    local what
    if a.scale_factor then
      what = "scale_factor=" .. (type(raw.scale_factor) == "table" and pyrepr(a.scale_factor) or util.pyfloat(a.scale_factor[1]))
    else
      what = "size=" .. (type(raw.size) == "table" and pyrepr(a.size) or tostring(a.size[1]))
    end
    return string.format("nn.Upsample(%s, mode='%s'%s)", what, a.mode,
      a.align_corners ~= nil and (", align_corners=" .. pybool(a.align_corners)) or "")
  end,
  ConvTranspose2d = function(a)
    return string.format("nn.ConvTranspose2d(%d, %d, %s, stride=%s, padding=%s, output_padding=%s, groups=%d, bias=%s, dilation=%s)",
      a.in_channels, a.out_channels, pyrepr(a.kernel_size), pyrepr(a.stride), pyrepr(a.padding), pyrepr(a.output_padding),
      a.groups, pybool(a.bias), pyrepr(a.dilation))
  end,
  ConvTranspose1d = function(a)
    return string.format("nn.ConvTranspose1d(%d, %d, %s, stride=%s, padding=%s, output_padding=%s, groups=%d, bias=%s, dilation=%s)",
      a.in_channels, a.out_channels, pyrepr(a.kernel_size), pyrepr(a.stride), pyrepr(a.padding), pyrepr(a.output_padding),
      a.groups, pybool(a.bias), pyrepr(a.dilation))
  end,
  MultiheadAttention = function(a)
    return string.format("nn.MultiheadAttention(%d, %d, dropout=%s, bias=%s, batch_first=True)", a.embed_dim, a.num_heads,
      util.pyfloat(a.dropout), pybool(a.bias))
  end,
  TransformerEncoderLayer = function(a)
    return string.format("nn.TransformerEncoderLayer(%d, %d, dim_feedforward=%d, dropout=%s, activation='%s', layer_norm_eps=%s, " ..
      "batch_first=True, norm_first=%s)", a.d_model, a.nhead, a.dim_feedforward, util.pyfloat(a.dropout), a.activation,
      util.pyfloat(a.layer_norm_eps), pybool(a.norm_first))
  end,
  LSTM = function(a) return string.format("nn.LSTM(%d, %d, num_layers=%d, bias=%s, batch_first=True, dropout=%s, bidirectional=%s)",
    a.input_size, a.hidden_size, a.num_layers, pybool(a.bias), util.pyfloat(a.dropout), pybool(a.bidirectional)) end,
  GRU = function(a) return string.format("nn.GRU(%d, %d, num_layers=%d, bias=%s, batch_first=True, dropout=%s, bidirectional=%s)",
    a.input_size, a.hidden_size, a.num_layers, pybool(a.bias), util.pyfloat(a.dropout), pybool(a.bidirectional)) end,
  Conv1d = function(a)
    local pad = type(a.padding) == "string" and ("'" .. a.padding .. "'") or pyrepr(a.padding)
    return string.format("nn.Conv1d(%d, %d, %s, stride=%s, padding=%s, dilation=%s, groups=%d, bias=%s)", a.in_channels,
      a.out_channels, pyrepr(a.kernel_size), pyrepr(a.stride), pad, pyrepr(a.dilation), a.groups, pybool(a.bias))
  end,
}

-- Python access path of a module from the model: "img_input.1" → self.img_input[1]
local function access(prefix)
  local out = "self"
  for part in prefix:gmatch("[^.]+") do
    if part:match("^%d+$") then out = out .. "[" .. part .. "]" else out = out .. "." .. part end
  end
  return out
end

---------------------------------------------------------------------------
-- classes for spec-defined modules (one per distinct structure)

local function class_writer()
  local classes, order, by_key, used = {}, {}, {}, {}
  local function class_of(rec)
    -- a container of built-ins needs no class of its own
    local lines = {}
    for _, c in ipairs(rec.children) do
      lines[#lines + 1] = { name = c.name, expr = nil, mod = c.mod }
    end
    local body = {}
    local function ctor(p)
      local r = nn.record(p)
      if CTORS[r.class] then return CTORS[r.class](r.args, r.raw or {}) end
      if r.class == "Sequential" or r.class == "ModuleList" then
        local items = {}
        for _, c in ipairs(r.children) do items[#items + 1] = ctor(c.mod) end
        return string.format("nn.%s([%s])", r.class, table.concat(items, ", "))
          :gsub("^nn%.Sequential%(%[(.*)%]%)$", "nn.Sequential(%1)")
      end
      if r.class == "ModuleDict" then
        local items = {}
        for _, c in ipairs(r.children) do items[#items + 1] = string.format("'%s': %s", c.name, ctor(c.mod)) end
        return string.format("nn.ModuleDict({%s})", table.concat(items, ", "))
      end
      return class_of(r) .. "()"
    end
    -- the module's own parameters (spec's Parameter(...)), zeros until the state_dict is loaded
    for _, prm in ipairs(rec.params) do
      local dims = {}
      for k, d in ipairs(prm.shape) do dims[k] = tostring(d) end
      body[#body + 1] = string.format("        self.%s = nn.Parameter(torch.zeros(%s))", prm.name, table.concat(dims, ", "))
    end
    for _, c in ipairs(rec.children) do body[#body + 1] = string.format("        self.%s = %s", c.name, ctor(c.mod)) end
    local key = rec.class .. "\0" .. table.concat(body, "\n")
    if by_key[key] then return by_key[key] end
    local pyname = rec.class
    local n = 1
    while used[pyname] do n = n + 1; pyname = rec.class .. "_" .. n end
    used[pyname] = true
    by_key[key] = pyname
    classes[pyname] = { name = pyname, class = rec.class, body = body, rec = rec }
    order[#order + 1] = pyname
    return pyname
  end
  return class_of, classes, order
end

---------------------------------------------------------------------------
-- a trace as Python statements

local REDUCTION = function(a) return a.reduction end

local function slice_expr(x, a, var)
  local n = #x.shape
  local d = a.dim < 0 and a.dim + n or a.dim
  local parts = {}
  for i = 0, d - 1 do parts[#parts + 1] = ":" end
  parts[#parts + 1] = string.format("%s:%s%s", a.start and tostring(a.start) or "", a.stop and tostring(a.stop) or "",
    a.step ~= 1 and (":" .. a.step) or "")
  return string.format("%s[%s]", var, table.concat(parts, ", "))
end

-- a float as a Python expression (repr's text reads back; inf and nan are names repr
-- writes that Python has only as float('inf'), float('nan'))
local function pynum(x)
  if x ~= x or x == math.huge or x == -math.huge then return "float('" .. util.pyfloat(x) .. "')" end
  return util.pyfloat(x)
end

local function statements(g, trace, input_expr, consts)
  local lines = {}
  -- the batch size (x:size(0) in a size list): the model's first input's dim 0
  local function batch_size() return input_expr(g.spec.inputs[1].name) .. ".shape[0]" end
  local function v(t)
    if t.param then
      if not t.param:find(".", 1, true) then return "self." .. t.param end   -- the model's own Parameter
      return access(t.param:gsub("%.([^.]+)$", "")) .. "." .. t.param:match("([^.]+)$")
    end
    if t.input then return input_expr(t.input) end
    return "t" .. t.id
  end
  for _, node in ipairs(trace.nodes) do
    local a = node.attrs
    local i = node.inputs
    local expr
    if node.metric then
      -- train.log's metrics, traced after the loss: not part of training_loss
    elseif node.composite_inner then
      -- an op inside a built-in module of several ops: written as the module's one call below
    elseif node.composite then
      local c, args = node.composite, {}
      for k, t in ipairs(c.args) do
        -- a list of tensors is a tuple (an LSTM's initial states)
        args[k] = t.shape and v(t) or "(" .. v(t[1]) .. ", " .. v(t[2]) .. ")"
      end
      local kw = {}
      for _, x in ipairs(c.kwargs or {}) do kw[#kw + 1] = string.format(", %s=%s%s", x[1], v(x[2]), x[3] or "") end
      local call = string.format("%s(%s%s%s)", access((g.prefix_of[c.rec] or ""):gsub("%.$", "")), table.concat(args, ", "),
        c.opts or "", table.concat(kw))
      if c.shared then
        -- a call with several results: made once (its first result's node names it), each taken from it
        if not c.shared[trace] then
          c.shared[trace] = "c" .. node.out.id
          lines[#lines + 1] = string.format("        %s = %s  # %s:%d", c.shared[trace], call, node.where.file, node.where.line)
        end
        expr = c.shared[trace] .. c.suffix
      else
        expr = call .. c.suffix
      end
    elseif node.module and node.module.forward and CTORS[node.module.class] then
      expr = string.format("%s(%s)", access((g.prefix_of[node.module] or ""):gsub("%.$", "")), v(i[1]))
    elseif node.op == "add" or node.op == "sub" or node.op == "mul" or node.op == "div" then
      local sym = ({ add = "+", sub = "-", mul = "*", div = "/" })[node.op]
      if not i[2] then
        local s = util.pyfloat(a.scalar)
        expr = a.scalar_left and string.format("%s %s %s", s, sym, v(i[1])) or string.format("%s %s %s", v(i[1]), sym, s)
      else
        expr = string.format("%s %s %s", v(i[1]), sym, v(i[2]))
      end
    elseif node.op == "constant" then
      -- one module-level table per distinct constant (CONSTANTS below), made a tensor once per dtype
      local vals = {}
      for k, x in ipairs(a.values) do vals[k] = pynum(x) end
      local key = table.concat(a.shape, ",") .. ":" .. table.concat(vals, ",")
      if not consts.index[key] then
        consts[#consts + 1] = string.format("    ([%s], (%s)),", table.concat(vals, ", "),
          table.concat(a.shape, ", ") .. (#a.shape == 1 and "," or ""))
        consts.index[key] = #consts - 1
      end
      expr = string.format("constant(%d, next(self.parameters()).dtype)", consts.index[key])
    elseif node.op == "random" then
      -- torch.randn / rand: the parameters' dtype and device, the batch's size (PyTorch's own
      -- generator: parity tests put loom's draws in its place, tests/torch/philox.py)
      local f = a.dist == "normal" and "randn" or "rand"
      if i[1] then expr = string.format("torch.%s_like(%s)", f, v(i[1]))
      else
        local dims = {}
        for k, d in ipairs(a.shape) do dims[k] = d == "B" and batch_size() or tostring(d) end
        expr = string.format("torch.%s(%s, dtype=next(self.parameters()).dtype, device=next(self.parameters()).device)", f,
          table.concat(dims, ", "))
      end
    elseif node.op == "tile" then
      local dims = {}
      for k, d in ipairs(a.sizes) do dims[k] = d == "B" and batch_size() or tostring(d) end
      expr = string.format("%s.%s(%s)", v(i[1]), a.as == "expand" and "expand" or "repeat", table.concat(dims, ", "))
    elseif node.op == "argmax" then expr = string.format("torch.argmax(%s, dim=%d, keepdim=%s)", v(i[1]), a.dims[1], pybool(a.keepdim))
    elseif node.op == "compare" then
      expr = string.format("torch.%s(%s, %s).long()", a.as, v(i[1]), i[2] and v(i[2]) or util.pyfloat(a.scalar))
    elseif node.op == "cat" then
      local xs = {}
      for k, x in ipairs(i) do xs[k] = v(x) end
      expr = string.format("torch.cat([%s], dim=%d)", table.concat(xs, ", "), a.dim)
    elseif node.op == "matmul" then expr = string.format("torch.matmul(%s, %s)", v(i[1]), v(i[2]))
    elseif node.op == "reshape" then
      -- the batch size ("B": unsqueeze, squeeze, x:view(x:size(0), ...)): the input's dim where B is
      local dims, bdim = {}, 0
      for k, d in ipairs(i[1].shape) do if d == "B" then bdim = k - 1 end end
      for k, d in ipairs(a.dims) do dims[k] = d == "B" and (v(i[1]) .. ".shape[" .. bdim .. "]") or tostring(d) end
      expr = string.format("%s.reshape(%s)", v(i[1]), table.concat(dims, ", "))
    elseif node.op == "detach" then expr = v(i[1]) .. ".detach()"
    elseif node.op == "flatten" then expr = string.format("torch.flatten(%s, %d, %d)", v(i[1]), a.start_dim, a.end_dim)
    elseif node.op == "transpose" then expr = string.format("%s.transpose(%d, %d)", v(i[1]), a.dim0, a.dim1)
    elseif node.op == "permute" then expr = string.format("%s.permute(%s)", v(i[1]), table.concat(a.dims, ", "))
    elseif node.op == "sum" or node.op == "mean" then
      if a.dims then
        expr = string.format("%s.%s(dim=(%s,), keepdim=%s)", v(i[1]), node.op, table.concat(a.dims, ", "), pybool(a.keepdim))
      else
        expr = string.format("%s.%s()", v(i[1]), node.op)
      end
    elseif node.op == "slice" then expr = slice_expr(i[1], a, v(i[1]))
    elseif node.op == "softmax" or node.op == "log_softmax" then expr = string.format("F.%s(%s, dim=%d)", node.op, v(i[1]), a.dim)
    elseif node.op == "gelu" then expr = string.format("F.gelu(%s, approximate='%s')", v(i[1]), a.approximate)
    elseif node.op == "relu" or node.op == "silu" then expr = string.format("F.%s(%s)", node.op, v(i[1]))
    elseif node.op == "sigmoid" or node.op == "tanh" then expr = string.format("torch.%s(%s)", node.op, v(i[1]))
    elseif node.op == "scaled_dot_product_attention" then
      expr = string.format("scaled_dot_product_attention(%s, %s, %s, is_causal=%s%s)", v(i[1]), v(i[2]), v(i[3]),
        pybool(a.is_causal), a.scale and (", scale=" .. util.pyfloat(a.scale)) or "")
    elseif node.op == "leaky_relu" then expr = string.format("F.leaky_relu(%s, %s)", v(i[1]), util.pyfloat(a.negative_slope))
    elseif node.op == "elu" then expr = string.format("F.elu(%s, %s)", v(i[1]), util.pyfloat(a.alpha))
    elseif node.op == "softplus" then expr = string.format("F.softplus(%s, %s, %s)", v(i[1]), util.pyfloat(a.beta), util.pyfloat(a.threshold))
    elseif node.op == "hardtanh" then
      expr = a.as == "relu6" and string.format("F.relu6(%s)", v(i[1]))
        or string.format("F.hardtanh(%s, %s, %s)", v(i[1]), util.pyfloat(a.min_val), util.pyfloat(a.max_val))
    elseif node.op == "mish" or node.op == "hardswish" then expr = string.format("F.%s(%s)", node.op, v(i[1]))
    elseif node.op == "exp" or node.op == "log" or node.op == "sqrt" or node.op == "rsqrt" or node.op == "abs" then
      expr = string.format("torch.%s(%s)", node.op, v(i[1]))
    elseif node.op == "pow" then expr = string.format("torch.pow(%s, %s)", v(i[1]), util.pyfloat(a.exponent))
    elseif node.op == "pow_tensor" then expr = string.format("torch.pow(%s, %s)", v(i[1]), v(i[2]))
    elseif node.op == "clamp" then
      expr = string.format("torch.clamp(%s, min=%s, max=%s)", v(i[1]), a.min and util.pyfloat(a.min) or "None", a.max and util.pyfloat(a.max) or "None")
    elseif node.op == "maximum" or node.op == "minimum" then expr = string.format("torch.%s(%s, %s)", node.op, v(i[1]), v(i[2]))
    elseif node.op == "amax" then
      expr = a.dims and string.format("torch.amax(%s, dim=(%s,), keepdim=%s)", v(i[1]), table.concat(a.dims, ", "), pybool(a.keepdim))
        or string.format("torch.max(%s)", v(i[1]))
    elseif node.op == "max_dim" then expr = string.format("torch.max(%s, dim=%d, keepdim=%s).values", v(i[1]), a.dims[1], pybool(a.keepdim))
    elseif node.op == "var" or node.op == "std" then
      local dims = a.dims and string.format("dim=(%s,), ", table.concat(a.dims, ", ")) or "dim=None, "
      expr = string.format("torch.%s(%s, %sunbiased=%s, keepdim=%s)", node.op, v(i[1]), dims, pybool(a.correction == 1), pybool(a.keepdim))
      if a.correction ~= 0 and a.correction ~= 1 then
        expr = string.format("torch.%s(%s, %scorrection=%s, keepdim=%s)", node.op, v(i[1]), dims, util.pyfloat(a.correction), pybool(a.keepdim))
      end
    elseif node.op == "where" then
      local c = v(i[1]) .. ".bool()"
      local a = node.attrs.a ~= nil and pynum(node.attrs.a) or v(i[2])
      local b = node.attrs.b ~= nil and pynum(node.attrs.b) or (node.attrs.a ~= nil and v(i[2]) or v(i[3]))
      expr = (node.attrs.as == "masked_fill" and string.format("%s.masked_fill(%s, %s)", b, c, a)
        or string.format("torch.where(%s, %s, %s)", c, a, b))
    elseif node.op == "cosine_similarity" then
      expr = string.format("F.cosine_similarity(%s, %s, dim=%d, eps=%s)", v(i[1]), v(i[2]), a.dim, util.pyfloat(a.eps))
    elseif node.op == "smooth_l1" then
      expr = string.format("F.smooth_l1_loss(%s, %s, reduction='%s', beta=%s)", v(i[1]), v(i[2]), REDUCTION(a), util.pyfloat(a.beta))
    elseif node.op == "huber" then
      expr = string.format("F.huber_loss(%s, %s, reduction='%s', delta=%s)", v(i[1]), v(i[2]), REDUCTION(a), util.pyfloat(a.delta))
    elseif node.op == "kl_div" then
      expr = string.format("F.kl_div(%s, %s, reduction='%s', log_target=%s)", v(i[1]), v(i[2]), REDUCTION(a), pybool(a.log_target))
    elseif node.op == "nll_loss" then
      expr = string.format("F.nll_loss(%s, %s, %signore_index=%d, reduction='%s')", v(i[1]), v(i[2]),
        i[3] and "weight=" .. v(i[3]) .. ", " or "", a.ignore_index, REDUCTION(a))
    elseif node.op == "autoregress" then expr = v(i[1])   -- a sampling method's logits (its loop: generate below)
    elseif node.op == "cross_entropy" then
      expr = string.format("F.cross_entropy(%s, %s, %signore_index=%d, label_smoothing=%s, reduction='%s')", v(i[1]), v(i[2]),
        i[3] and "weight=" .. v(i[3]) .. ", " or "", a.ignore_index, util.pyfloat(a.label_smoothing), REDUCTION(a))
    elseif node.op == "bce" then expr = string.format("F.binary_cross_entropy(%s, %s, reduction='%s')", v(i[1]), v(i[2]), REDUCTION(a))
    elseif node.op == "bce_with_logits" then expr = string.format("F.binary_cross_entropy_with_logits(%s, %s, reduction='%s')", v(i[1]), v(i[2]), REDUCTION(a))
    elseif node.op == "mse" then expr = string.format("F.mse_loss(%s, %s, reduction='%s')", v(i[1]), v(i[2]), REDUCTION(a))
    elseif node.op == "l1" then expr = string.format("F.l1_loss(%s, %s, reduction='%s')", v(i[1]), v(i[2]), REDUCTION(a))
    elseif node.op == "accuracy" then
      expr = i[2].dtype == "int64" and string.format("(%s.argmax(1) == %s).float().mean()", v(i[1]), v(i[2]))
        or string.format("((%s > %s) == (%s > 0.5)).float().mean()", v(i[1]), util.pyfloat(a.threshold), v(i[2]))
    else
      diag.fatal(node.where, node.op .. " has no PyTorch translation yet (loom build --emit torch)")
    end
    if expr then
      lines[#lines + 1] = string.format("        t%d = %s  # %s:%d", node.out.id, expr, node.where.file, node.where.line)
    end
  end
  return lines, v
end

local HEADER = [==[
# %s: the PyTorch equivalent of the model in %s, generated by loom.
# The module prints, names its parameters and buffers, and computes as the spec's
# model; a loom checkpoint loads with load_loom_checkpoint() + load_state_dict(strict=True).
import json
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F


def scaled_dot_product_attention(q, k, v, is_causal=False, scale=None):
    """softmax(q k^T * scale [+ causal mask]) v, as torch.nn.functional's (PyTorch >= 2.0)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    att = torch.matmul(q, k.transpose(-2, -1)) * scale
    if is_causal:
        L, S = q.shape[-2], k.shape[-2]
        mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        att = att.masked_fill(~mask, float('-inf'))
    return torch.matmul(torch.softmax(att, dim=-1), v)


if hasattr(nn, 'RMSNorm'):
    RMSNorm = nn.RMSNorm
else:
    class RMSNorm(nn.Module):
        """torch.nn.RMSNorm of PyTorch 2.4, for older versions."""

        def __init__(self, normalized_shape, eps=None, elementwise_affine=True):
            super().__init__()
            self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
            self.eps = eps
            self.elementwise_affine = elementwise_affine
            self.weight = nn.Parameter(torch.ones(self.normalized_shape)) if elementwise_affine else None

        def forward(self, x):
            dims = tuple(range(-len(self.normalized_shape), 0))
            eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
            y = x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps)
            return y * self.weight if self.weight is not None else y

        def extra_repr(self):
            return '{normalized_shape}, eps={eps}, elementwise_affine={elementwise_affine}'.format(**self.__dict__)


_DTYPES = {'F32': torch.float32, 'F64': torch.float64, 'F16': torch.float16, 'BF16': torch.bfloat16,
           'I64': torch.int64, 'I32': torch.int32, 'U8': torch.uint8}


def load_loom_checkpoint(path):
    """A loom checkpoint (safetensors) → (model state_dict, everything else, metadata)."""
    with open(path, 'rb') as f:
        data = f.read()
    (n,) = struct.unpack('<Q', data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop('__metadata__', {})
    base = 8 + n
    model, other = {}, {}
    for name, t in header.items():
        b, e = t['data_offsets']
        x = torch.frombuffer(bytearray(data[base + b:base + e]), dtype=_DTYPES[t['dtype']]).reshape(t['shape'])
        (other if name.startswith('optimizer.') else model)[name] = x
    return model, other, meta
]==]

-- A sampling method (autoregress, gen/entries.lua) as nanoGPT's generate loop over
-- the traced logits, with loom's window: at most T positions; when a token would not
-- fit, the window restarts at its last half (the program's --sample does the same).
local function generate_method(g, mname, node)
  local sp = g.spec
  local logits, idx = node.inputs[1], node.inputs[2]
  local T, V = idx.shape[#idx.shape], logits.shape[#logits.shape]
  local vocab_in = V
  for _, n in ipairs(g.traces[mname].nodes) do
    if n.op == "embedding" and n.inputs[1] == idx then vocab_in = math.min(vocab_in, n.inputs[2].shape[1]) end
  end
  local arg = sp.single_input and "w" or string.format("{'%s': w}", idx.input)
  return {
    "",
    "    @torch.no_grad()",
    string.format("    def %s(self, idx, n, temperature=%s, top_k=%d, generator=None):", mname, util.pyfloat(node.attrs.temperature), node.attrs.top_k),
    string.format("        \"\"\"%s:%d: n tokens after the tokens idx (a list), each drawn from the logits of the last", node.where.file, node.where.line),
    "        positions (a window of at most T; when full, it restarts at its last half, as loom's --sample);",
    "        temperature 0 or top_k 1: the most likely token.  Returns the tokens, idx's first.\"\"\"",
    string.format("        T, draw = %d, %d", T, math.min(V, vocab_in)),
    "        seq, start = list(idx), 0",
    "        for _ in range(n):",
    "            if len(seq) - start > T:",
    "                start = len(seq) - (T + 1) // 2",
    "            w = torch.zeros(1, T, dtype=torch.int64)",
    "            w[0, :len(seq) - start] = torch.tensor(seq[start:], dtype=torch.int64)",
    string.format("            logits = self._%s_logits(%s)[0, len(seq) - start - 1, :draw].double()", mname, arg),
    "            if temperature == 0 or top_k == 1:",
    "                tok = int(torch.argmax(logits))",
    "            else:",
    "                logits = logits / temperature",
    "                if top_k:",
    "                    v, _ = torch.topk(logits, top_k)",
    "                    logits[logits < v[-1]] = float('-inf')",
    "                tok = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))",
    "            seq.append(tok)",
    "        return seq",
  }
end

function emit_torch.module(g)
  local sp = g.spec
  local class_of, classes, order = class_writer()
  local top = class_of(g.model_rec)
  local out = { string.format(HEADER, g.model_rec.class, sp.file) }
  -- fabric.float32_matmul_precision: a module sets no global state on import, so the
  -- setting is a constant for the training script to apply
  local mp = sp.fabric.float32_matmul_precision
  if mp and mp ~= "highest" then
    out[#out + 1] = string.format("# the spec's fabric.float32_matmul_precision: before training, as loom's CUDA program does,\n" ..
      "# torch.set_float32_matmul_precision(FLOAT32_MATMUL_PRECISION)  (TF32 float32 GEMMs on the GPU)\n" ..
      "FLOAT32_MATMUL_PRECISION = '%s'", mp)
  end
  -- the model's input names, in the spec's order (forward takes a dict of them)
  if not sp.single_input then
    local names = {}
    for _, inp in ipairs(sp.inputs) do names[#names + 1] = "'" .. inp.name .. "'" end
    out[#out + 1] = string.format("INPUTS = [%s]", table.concat(names, ", "))
  end
  local consts, consts_at = { index = {} }, #out + 1
  for _, name in ipairs(order) do
    local c = classes[name]
    out[#out + 1] = ""
    out[#out + 1] = ""
    out[#out + 1] = string.format("class %s(nn.Module):", name)
    out[#out + 1] = "    def __init__(self):"
    out[#out + 1] = "        super().__init__()"
    for _, l in ipairs(c.body) do out[#out + 1] = l end
    if name ~= c.class then
      out[#out + 1] = ""
      out[#out + 1] = "    def _get_name(self):"
      out[#out + 1] = string.format("        return '%s'", c.class)
    end
    if name == top then
      -- every traced method; inputs come as in the spec (a tensor, or a dict of named tensors)
      for _, mname in ipairs(g.order) do
        local t = g.traces[mname]
        local body, v = statements(g, t, function(inp) return sp.single_input and "x" or string.format("x['%s']", inp) end, consts)
        local ar = t.outputs[1] and t.outputs[1].node and t.outputs[1].node.op == "autoregress" and t.outputs[1].node
        out[#out + 1] = ""
        out[#out + 1] = string.format("    def %s(self, x):", ar and ("_" .. mname .. "_logits") or mname)
        for _, l in ipairs(body) do out[#out + 1] = l end
        local rets = {}
        for k = 1, t.outputs.n do rets[k] = v(t.outputs[k]) end
        out[#out + 1] = "        return " .. table.concat(rets, ", ")
        if ar then for _, l in ipairs(generate_method(g, mname, ar)) do out[#out + 1] = l end end
      end
      if g.loss then
        local body, v = statements(g, g.loss, function(inp) return string.format("batch['%s']", inp) end, consts)
        out[#out + 1] = ""
        out[#out + 1] = "    def training_loss(self, batch):"
        out[#out + 1] = string.format("        \"\"\"train.loss of %s, on a dict of batch fields.\"\"\"", sp.file)
        for _, l in ipairs(body) do out[#out + 1] = l end
        out[#out + 1] = "        return " .. v(g.loss.outputs[1])
      end
    else
      out[#out + 1] = ""
      out[#out + 1] = "    def forward(self, *args):"
      out[#out + 1] = string.format("        raise NotImplementedError('loom writes this module\\'s computation inline in %s.forward')", g.model_rec.class)
    end
  end
  if #consts > 0 then
    -- the spec's tensor(...) constants (values, shape), and each as a tensor of a dtype, made once
    table.insert(out, consts_at, table.concat({ "", "CONSTANTS = [", table.concat(consts, "\n"), "]",
      "_constant_tensors = {}", "", "",
      "def constant(k, dtype):",
      "    \"\"\"CONSTANTS[k] as a tensor of dtype, rounded from float64 as loom rounds the spec's numbers.\"\"\"",
      "    if (k, dtype) not in _constant_tensors:",
      "        values, shape = CONSTANTS[k]",
      "        _constant_tensors[(k, dtype)] = torch.tensor(values, dtype=torch.float64).to(dtype).reshape(shape)",
      "    return _constant_tensors[(k, dtype)]" }, "\n"))
  end
  out[#out + 1] = ""
  return table.concat(out, "\n")
end

return emit_torch
