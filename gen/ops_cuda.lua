-- ops_cuda: the CUDA backend's half of the op table — for each op, the host code of
-- its forward and backward: cuBLASLt GEMMs (e.gemm) and NVRTC kernels (e.kernel +
-- e.launch).  Keyed like gen/ops.lua; an op missing here is reported to the user as
-- not yet supported by the CUDA backend (gen/emit_cuda.lua).
--
-- A kernel's per-element arithmetic is a call into templates/common/scalar_ops.h (the
-- header the CPU tests check against the CPU kernels); the kernel is the loop around
-- it, with each operand's storage format and view (gen/precision.lua) folded into
-- its accessors: ld_x(i) loads and rounds to the view, st_y(i, v) rounds and stores,
-- acc_dx(i, v) adds into a gradient in its format (see emit_cuda's context).
--
-- The rules get `e`:
--   e.val(t) / e.grad(t)        operand of a tensor's value / gradient (nil: no gradient)
--   e.save(node, name)          the device pointer of a saved buffer (C expression)
--   e.state(node, name), e.counter(node, name)   module buffers (f32) and counters
--   e.numel(t), e.rows(t, k), e.outer(t, d), e.batch(t)   sizes as C expressions
--   e.kernel{...}, e.launch(k, ...), e.gemm{...}, e.scratch(bytes, fmt)
local ops_cuda = {}

local function dims_after(shape, first)
  local n = 1
  for i = first, #shape do n = n * shape[i] end
  return n
end

local GRID = "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)"
local BLOCK = "for (long long i = threadIdx.x; i < n; i += blockDim.x)"

-- an elementwise kernel over n elements: `ops` = { {name, operand, mode}, ... }
local function pointwise(e, kind, ops, body, count, extra, extra_args)
  local k = e.kernel { kind = kind, ops = ops, params = "long long n" .. (extra and (", " .. extra) or ""),
                       body = GRID .. " {\n        " .. body .. "\n    }" }
  local args = { { "long long", count } }
  for _, a in ipairs(extra_args or {}) do args[#args + 1] = a end
  return e.launch(k, ops, args, { grid = count })
end

---------------------------------------------------------------------------
-- GEMMs

ops_cuda.linear = {
  forward = function(e, n)
    local x, w, b = n.inputs[1], n.inputs[2], n.inputs[3]
    return e.gemm { what = "linear forward", ta = 0, tb = 1, M = e.rows(x, 1), N = w.shape[1], K = w.shape[2],
                    A = e.val(x), B = e.val(w), C = e.val(n.out), bias = b and e.val(b) }
  end,
  backward = function(e, n)
    local x, w, b = n.inputs[1], n.inputs[2], n.inputs[3]
    local dy = e.grad(n.out)
    local lines = {}
    local function add(t) for _, l in ipairs(t) do lines[#lines + 1] = l end end
    if e.grad(x) then   -- dx (rows, I) += dy (rows, O) · W (O, I)
      add(e.gemm { what = "linear dx", ta = 0, tb = 0, M = e.rows(x, 1), N = w.shape[2], K = w.shape[1],
                   A = dy, B = e.val(w), C = e.grad(x), accumulate = true })
    end
    if e.grad(w) then   -- dW (O, I) += dy^T (O, rows) · x (rows, I)
      add(e.gemm { what = "linear dW", ta = 1, tb = 0, M = w.shape[1], N = w.shape[2], K = e.rows(x, 1),
                   A = dy, B = e.val(x), C = e.grad(w), accumulate = true })
    end
    if b and e.grad(b) then   -- db (O) += column sums of dy, summed in double like the CPU
      local ops = { { "dy", dy, "r" }, { "db", e.grad(b), "a" } }
      local k = e.kernel { kind = "bias_grad_rows", ops = ops, params = "long long n, long long rows",
        body = GRID .. " {\n        double s = 0;\n        for (long long r = 0; r < rows; r++) s += ld_dy(r * n + i);\n" ..
               "        acc_db(i, (float)s);\n    }" }
      add(e.launch(k, ops, { { "long long", w.shape[1] }, { "long long", e.rows(x, 1) } }, { grid = w.shape[1] }))
    end
    return lines
  end,
}

-- conv2d as im2col + one GEMM over the whole batch: cols (C·KH·KW, B·OH·OW) in the GEMM's
-- format, Yt (OC, B·OH·OW) = W · cols in f32, then one kernel permutes Yt to NCHW, adds
-- the bias and stores in the output's format.  Backward: dYt = dy permuted, dW += dYt ·
-- colsᵀ, dcols = Wᵀ · dYt, dx += col2im(dcols) (a gather: no atomics, deterministic).
local function conv_geometry(n)
  local x, w, a = n.inputs[1], n.inputs[2], n.attrs
  assert(a.groups == 1)
  return { C = x.shape[2], H = x.shape[3], W = x.shape[4], OC = w.shape[1], KH = w.shape[3], KW = w.shape[4],
           SH = a.stride[1], SW = a.stride[2], PH = a.padding[1], PW = a.padding[2], DH = a.dilation[1], DW = a.dilation[2],
           OH = n.out.shape[3], OW = n.out.shape[4] }
end
local GEOM = "const int C, const int H, const int W, const int KH, const int KW, const int SH, const int SW, " ..
             "const int PH, const int PW, const int DH, const int DW, const int OH, const int OW"
local function geom_args(g)
  local t = {}
  for _, k in ipairs { "C", "H", "W", "KH", "KW", "SH", "SW", "PH", "PW", "DH", "DW", "OH", "OW" } do t[#t + 1] = { "int", g[k] } end
  return t
end

local function im2col(e, x_op, cols, g, np, B)
  local ops = { { "x", x_op, "r" }, { "cols", cols, "w" } }
  local k = e.kernel { kind = "im2col", ops = ops, params = "long long n, long long NP, " .. GEOM,
    body = GRID .. [[ {
        long long q = i / NP, col = i % NP, P = (long long)OH * OW;
        long long b = col / P, p = col % P;
        int oh = (int)(p / OW), ow = (int)(p % OW);
        int c = (int)(q / (KH * KW)), r = (int)(q % (KH * KW)), kh = r / KW, kw = r % KW;
        int h = oh * SH - PH + kh * DH, w = ow * SW - PW + kw * DW;
        float v = 0;
        if (h >= 0 && h < H && w >= 0 && w < W) v = ld_x(((b * C + c) * H + h) * (long long)W + w);
        st_cols(i, v);
    }]] }
  local count = string.format("(long long)%d * %s", g.C * g.KH * g.KW, np)
  local args = { { "long long", count }, { "long long", np } }
  for _, a in ipairs(geom_args(g)) do args[#args + 1] = a end
  return e.launch(k, ops, args, { grid = count })
end

ops_cuda.conv2d = {
  forward = function(e, n)
    local x, w, b = n.inputs[1], n.inputs[2], n.inputs[3]
    local g = conv_geometry(n)
    local B = e.batch(x)
    local np = string.format("(long long)%s * %d", B, g.OH * g.OW)
    local F = e.gemm_format(e.val(x), e.val(w))
    local ckk = g.C * g.KH * g.KW
    local cols = e.scratch(string.format("(size_t)%d * %s", ckk, np), F)
    local yt = e.scratch(string.format("(size_t)%d * %s", g.OC, np), "f32")
    local lines = im2col(e, e.val(x), cols, g, np, B)
    for _, l in ipairs(e.gemm { what = "conv2d forward", ta = 0, tb = 0, M = g.OC, N = np, K = ckk, A = e.val(w), B = cols, C = yt }) do
      lines[#lines + 1] = l
    end
    local ops = { { "yt", yt, "r" }, { "y", e.val(n.out), "w" } }
    if b then ops[#ops + 1] = { "bias", e.val(b), "r" } end
    local k = e.kernel { kind = b and "conv_out_bias" or "conv_out", ops = ops, params = "long long n, long long NP, int OC, long long P",
      body = GRID .. " {\n        long long bi = i / ((long long)OC * P), c = (i / P) % OC, p = i % P;\n" ..
             "        float v = ld_yt(c * NP + bi * P + p);\n" .. (b and "        v += ld_bias(c);\n" or "") ..
             "        st_y(i, v);\n    }" }
    local count = string.format("(long long)%s * %d", B, g.OC * g.OH * g.OW)
    for _, l in ipairs(e.launch(k, ops, { { "long long", count }, { "long long", np }, { "int", g.OC }, { "long long", g.OH * g.OW } },
      { grid = count })) do lines[#lines + 1] = l end
    return lines
  end,
  backward = function(e, n)
    local x, w, b = n.inputs[1], n.inputs[2], n.inputs[3]
    local g = conv_geometry(n)
    local B = e.batch(x)
    local P = g.OH * g.OW
    local np = string.format("(long long)%s * %d", B, P)
    local dy = e.grad(n.out)
    local F = e.gemm_format(dy, e.val(w))
    local ckk = g.C * g.KH * g.KW
    local lines = {}
    local function add(t) for _, l in ipairs(t) do lines[#lines + 1] = l end end
    -- dYt (OC, B·P) in the GEMMs' format
    local dyt = e.scratch(string.format("(size_t)%d * %s", g.OC, np), F)
    local ops = { { "dy", dy, "r" }, { "dyt", dyt, "w" } }
    local k = e.kernel { kind = "conv_dyt", ops = ops, params = "long long n, long long NP, int OC, long long P",
      body = GRID .. " {\n        long long c = i / NP, col = i % NP, bi = col / P, p = col % P;\n" ..
             "        st_dyt(i, ld_dy((bi * OC + c) * P + p));\n    }" }
    local count = string.format("(long long)%d * %s", g.OC, np)
    add(e.launch(k, ops, { { "long long", count }, { "long long", np }, { "int", g.OC }, { "long long", P } }, { grid = count }))
    if b and e.grad(b) then   -- db (OC) += sums over batch and positions, one block per channel
      local bops = { { "dy", dy, "r" }, { "db", e.grad(b), "a" } }
      local bk = e.kernel { kind = "bias_grad_channels", ops = bops, params = "long long n, int OC, long long P",
        body = "const int c = blockIdx.x;\n    double s = 0;\n    " .. BLOCK ..
               " s += ld_dy((i / P * OC + c) * P + i % P);\n    s = block_sum(s);\n    if (threadIdx.x == 0) acc_db(c, (float)s);" }
      add(e.launch(bk, bops, { { "long long", string.format("(long long)%s * %d", B, P) }, { "int", g.OC }, { "long long", P } },
        { blocks = g.OC }))
    end
    local need_cols = e.grad(w) ~= nil
    local cols
    if need_cols then
      cols = e.scratch(string.format("(size_t)%d * %s", ckk, np), F)
      add(im2col(e, e.val(x), cols, g, np, B))
      -- dW (OC, CKK) += dYt (OC, NP) · colsᵀ (cols stored CKK x NP)
      add(e.gemm { what = "conv2d dW", ta = 0, tb = 1, M = g.OC, N = ckk, K = np, A = dyt, B = cols, C = e.grad(w), accumulate = true })
    end
    if e.grad(x) then
      local dcols = e.scratch(string.format("(size_t)%d * %s", ckk, np), "f32")
      add(e.gemm { what = "conv2d dx", ta = 1, tb = 0, M = ckk, N = np, K = g.OC, A = e.val(w), B = dyt, C = dcols })
      local cops = { { "dcols", dcols, "r" }, { "dx", e.grad(x), "a" } }
      local ck = e.kernel { kind = "col2im", ops = cops, params = "long long n, long long NP, " .. GEOM,
        body = GRID .. [[ {
        long long w = i % W, h = (i / W) % H, c = (i / ((long long)W * H)) % C, bi = i / ((long long)W * H * C);
        long long P = (long long)OH * OW;
        float s = 0;
        for (int kh = 0; kh < KH; kh++) {
            long long th = h + PH - (long long)kh * DH;
            if (th < 0 || th % SH) continue;
            long long oh = th / SH;
            if (oh >= OH) continue;
            for (int kw = 0; kw < KW; kw++) {
                long long tw = w + PW - (long long)kw * DW;
                if (tw < 0 || tw % SW) continue;
                long long ow = tw / SW;
                if (ow >= OW) continue;
                long long q = (c * KH + kh) * KW + kw;
                s += ld_dcols(q * NP + bi * P + oh * OW + ow);
            }
        }
        acc_dx(i, s);
    }]] }
      local xcount = string.format("(long long)%s * %d", B, g.C * g.H * g.W)
      local args = { { "long long", xcount }, { "long long", np } }
      for _, a in ipairs(geom_args(g)) do args[#args + 1] = a end
      add(e.launch(ck, cops, args, { grid = xcount }))
    end
    return lines
  end,
}

---------------------------------------------------------------------------
-- pooling (max: argmax saved as the index in the input plane, as the CPU does)

local function pool_geometry(n)
  local x, a = n.inputs[1], n.attrs
  local dil = a.dilation or { 1, 1 }
  assert(dil[1] == 1 and dil[2] == 1)
  return { H = x.shape[3], W = x.shape[4], KH = a.kernel_size[1], KW = a.kernel_size[2], SH = a.stride[1], SW = a.stride[2],
           PH = a.padding[1], PW = a.padding[2], OH = n.out.shape[3], OW = n.out.shape[4] }
end
local PGEOM = "const int H, const int W, const int KH, const int KW, const int SH, const int SW, const int PH, const int PW, const int OH, const int OW"
local function pgeom_args(g)
  local t = {}
  for _, k in ipairs { "H", "W", "KH", "KW", "SH", "SW", "PH", "PW", "OH", "OW" } do t[#t + 1] = { "int", g[k] } end
  return t
end

ops_cuda.max_pool2d = {
  forward = function(e, n)
    local g = pool_geometry(n)
    local ops = { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }
    local k = e.kernel { kind = "max_pool2d", ops = ops, params = "long long n, int *argmax, " .. PGEOM,
      body = GRID .. [[ {
        long long plane = i / ((long long)OH * OW), p = i % ((long long)OH * OW);
        int oh = (int)(p / OW), ow = (int)(p % OW);
        int h0 = oh * SH - PH, h1 = h0 + KH, w0 = ow * SW - PW, w1 = w0 + KW;
        if (h1 > H) h1 = H;
        if (w1 > W) w1 = W;
        if (h0 < 0) h0 = 0;
        if (w0 < 0) w0 = 0;
        float best = -__int_as_float(0x7f800000);
        int besti = h0 * W + w0;
        for (int h = h0; h < h1; h++)
            for (int w = w0; w < w1; w++) {
                float v = ld_x(plane * H * W + h * W + w);
                if (v > best || v != v) { best = v; besti = h * W + w; }
            }
        st_y(i, best);
        if (argmax) argmax[i] = besti;
    }]] }
    local count = e.numel(n.out)
    local args = { { "long long", count }, { "void *", "training ? " .. e.save(n, "argmax") .. " : NULL" } }
    for _, a in ipairs(pgeom_args(g)) do args[#args + 1] = a end
    return e.launch(k, ops, args, { grid = count })
  end,
  backward = function(e, n)
    local g = pool_geometry(n)
    local ops = { { "dy", e.grad(n.out), "r" }, { "dx", e.grad(n.inputs[1]), "a" } }
    local k = e.kernel { kind = "max_pool2d_grad", ops = ops, params = "long long n, const int *argmax, " .. PGEOM,
      body = GRID .. [[ {
        long long plane = i / ((long long)H * W);
        int idx = (int)(i % ((long long)H * W)), h = idx / W, w = idx % W;
        int oh0 = h + PH - KH + 1, ow0 = w + PW - KW + 1;
        oh0 = oh0 <= 0 ? 0 : (oh0 + SH - 1) / SH;
        ow0 = ow0 <= 0 ? 0 : (ow0 + SW - 1) / SW;
        int oh1 = (h + PH) / SH, ow1 = (w + PW) / SW;
        if (oh1 > OH - 1) oh1 = OH - 1;
        if (ow1 > OW - 1) ow1 = OW - 1;
        float s = 0;
        for (int oh = oh0; oh <= oh1; oh++)
            for (int ow = ow0; ow <= ow1; ow++) {
                long long o = plane * OH * OW + oh * OW + ow;
                if (argmax[o] == idx) s += ld_dy(o);
            }
        acc_dx(i, s);
    }]] }
    local count = e.numel(n.inputs[1])
    local args = { { "long long", count }, { "void *", e.save(n, "argmax") } }
    for _, a in ipairs(pgeom_args(g)) do args[#args + 1] = a end
    return e.launch(k, ops, args, { grid = count })
  end,
}

---------------------------------------------------------------------------
-- batch norm: one block per channel for the statistics (double sums, as the CPU)

ops_cuda.batch_norm = {
  forward = function(e, n)
    local x, a = n.inputs[1], n.attrs
    local C, S = x.shape[2], dims_after(x.shape, 3)
    local w, b = n.inputs[2], n.inputs[3]
    local lines = {}
    local counter = e.counter(n, "num_batches_tracked")
    local ops = { { "x", e.val(x), "r" }, { "y", e.val(n.out), "w" } }
    if w then ops[#ops + 1] = { "wt", e.val(w), "r" } end
    if b then ops[#ops + 1] = { "bs", e.val(b), "r" } end
    local scale = w and "ld_wt(c) * invstd" or "invstd"
    local shift = b and "ld_bs(c)" or "0.0f"
    local k = e.kernel { kind = "batch_norm_train" .. (w and "_w" or "") .. (b and "_b" or ""), ops = ops,
      params = "long long n, int C, long long S, float eps, float momentum, float *save_mean, float *save_invstd, " ..
               "float *running_mean, float *running_var, const long long *tracked",
      body = [[const int c = blockIdx.x;
    double sum = 0, ss = 0;
    ]] .. BLOCK .. [[ sum += ld_x((i / S * C + c) * S + i % S);
    const double mean = block_sum(sum) / n;
    ]] .. BLOCK .. [[ { double d = ld_x((i / S * C + c) * S + i % S) - mean; ss += d * d; }
    ss = block_sum(ss);
    const float invstd = (float)(1.0 / sqrt(ss / n + eps)), m = (float)mean;
    const float scale = ]] .. scale .. ", shift = " .. shift .. [[;
    ]] .. BLOCK .. [[ {
        long long j = (i / S * C + c) * S + i % S;
        st_y(j, so_bn_apply(ld_x(j), m, scale, shift));
    }
    if (threadIdx.x == 0) {
        double f = momentum;
        if (momentum < 0 && tracked) f = 1.0 / (double)*tracked;
        if (save_mean) save_mean[c] = m;
        if (save_invstd) save_invstd[c] = invstd;
        if (running_mean) running_mean[c] = (float)((1 - f) * running_mean[c] + f * mean);
        if (running_var) running_var[c] = (float)((1 - f) * running_var[c] + f * (n > 1 ? ss / (n - 1) : 0.0 / 0.0));
    }]] }
    local count = string.format("(long long)%s * %d", e.batch(x), S)
    local momentum = a.momentum == false and -1 or a.momentum
    local train = {}
    if counter ~= "NULL" then
      local ck = e.kernel { kind = "counter_inc", ops = {}, params = "long long *counter",
                            body = "if (threadIdx.x == 0 && blockIdx.x == 0) *counter += 1;" }
      for _, l in ipairs(e.launch(ck, {}, { { "void *", counter } }, { blocks = 1, threads = 32 })) do train[#train + 1] = l end
    end
    for _, l in ipairs(e.launch(k, ops, { { "long long", count }, { "int", C }, { "long long", S }, { "float", e.lit(a.eps) },
        { "float", e.lit(momentum) }, { "void *", e.save(n, "mean") }, { "void *", e.save(n, "invstd") },
        { "void *", e.state(n, "running_mean") }, { "void *", e.state(n, "running_var") }, { "void *", counter } },
        { blocks = C })) do train[#train + 1] = l end
    if not a.track_running_stats then return train end
    local eops = { { "x", e.val(x), "r" }, { "y", e.val(n.out), "w" } }
    if w then eops[#eops + 1] = { "wt", e.val(w), "r" } end
    if b then eops[#eops + 1] = { "bs", e.val(b), "r" } end
    local ek = e.kernel { kind = "batch_norm_eval" .. (w and "_w" or "") .. (b and "_b" or ""), ops = eops,
      params = "long long n, int C, long long S, float eps, const float *running_mean, const float *running_var",
      body = GRID .. " {\n        const int c = (int)(i / S % C);\n        const float invstd = 1 / sqrtf(running_var[c] + eps);\n" ..
             "        const float scale = " .. scale .. ", shift = " .. shift .. " - running_mean[c] * scale;\n" ..
             "        st_y(i, so_bn_eval(ld_x(i), scale, shift));\n    }" }
    local ecount = e.numel(x)
    lines[#lines + 1] = "if (training) {"
    for _, l in ipairs(train) do lines[#lines + 1] = "    " .. l end
    lines[#lines + 1] = "} else {"
    for _, l in ipairs(e.launch(ek, eops, { { "long long", ecount }, { "int", C }, { "long long", S }, { "float", e.lit(a.eps) },
        { "void *", e.state(n, "running_mean") }, { "void *", e.state(n, "running_var") } }, { grid = ecount })) do
      lines[#lines + 1] = "    " .. l
    end
    lines[#lines + 1] = "}"
    return lines
  end,
  backward = function(e, n)
    local x = n.inputs[1]
    local C, S = x.shape[2], dims_after(x.shape, 3)
    local w, b = n.inputs[2], n.inputs[3]
    local ops = { { "dy", e.grad(n.out), "r" }, { "x", e.val(x), "r" } }
    local dx, dw, db = e.grad(x), w and e.grad(w), b and e.grad(b)
    if dx then ops[#ops + 1] = { "dx", dx, "a" } end
    if w then ops[#ops + 1] = { "wt", e.val(w), "r" } end
    if dw then ops[#ops + 1] = { "dw", dw, "a" } end
    if db then ops[#ops + 1] = { "db", db, "a" } end
    local body = { "const int c = blockIdx.x;",
      "    const float mean = save_mean[c], invstd = save_invstd[c];",
      "    double sdy = 0, sdyx = 0;",
      "    " .. BLOCK .. " {",
      "        long long j = (i / S * C + c) * S + i % S;",
      "        float g = ld_dy(j);",
      "        sdy += g;",
      "        sdyx += (double)g * (ld_x(j) - mean);",
      "    }",
      "    sdy = block_sum(sdy);",
      "    sdyx = block_sum(sdyx) * invstd;",
    }
    if dw then body[#body + 1] = "    if (threadIdx.x == 0) acc_dw(c, (float)sdyx);" end
    if db then body[#body + 1] = "    if (threadIdx.x == 0) acc_db(c, (float)sdy);" end
    if dx then
      body[#body + 1] = "    const float k = " .. (w and "ld_wt(c)" or "1.0f") .. " * invstd, mdy = (float)(sdy / n), mdyx = (float)(sdyx / n);"
      body[#body + 1] = "    " .. BLOCK .. " {"
      body[#body + 1] = "        long long j = (i / S * C + c) * S + i % S;"
      body[#body + 1] = "        acc_dx(j, so_bn_grad(ld_dy(j), ld_x(j), mean, invstd, k, mdy, mdyx));"
      body[#body + 1] = "    }"
    end
    local k = e.kernel { kind = "batch_norm_grad" .. (dx and "_x" or "") .. (w and "_w" or "") .. (dw and "_dw" or "") .. (db and "_db" or ""),
      ops = ops, params = "long long n, int C, long long S, const float *save_mean, const float *save_invstd",
      body = table.concat(body, "\n") }
    return e.launch(k, ops, { { "long long", string.format("(long long)%s * %d", e.batch(x), S) }, { "int", C }, { "long long", S },
      { "void *", e.save(n, "mean") }, { "void *", e.save(n, "invstd") } }, { blocks = C })
  end,
}

---------------------------------------------------------------------------
-- activations (backward from the output)

local function activation(name)
  ops_cuda[name] = {
    forward = function(e, n)
      return pointwise(e, name, { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } },
        string.format("st_y(i, so_%s(ld_x(i)));", name), e.numel(n.out))
    end,
    backward = function(e, n)
      return pointwise(e, name .. "_grad", { { "dy", e.grad(n.out), "r" }, { "y", e.val(n.out), "r" }, { "dx", e.grad(n.inputs[1]), "a" } },
        string.format("acc_dx(i, so_%s_grad(ld_dy(i), ld_y(i)));", name), e.numel(n.out))
    end,
  }
end
activation("relu")
activation("sigmoid")

-- a cast the precision pass kept as a kernel: one conversion into its own buffer
ops_cuda.cast = {
  forward = function(e, n)
    return pointwise(e, "convert", { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }, "st_y(i, ld_x(i));", e.numel(n.out))
  end,
  backward = function(e, n)
    if not e.grad(n.inputs[1]) then return {} end
    return pointwise(e, "convert_grad", { { "dy", e.grad(n.out), "r" }, { "dx", e.grad(n.inputs[1]), "a" } }, "acc_dx(i, ld_dy(i));",
      e.numel(n.out))
  end,
}

ops_cuda.flatten = { alias = true }
ops_cuda.reshape = { alias = true }

-- cat along `dim` (its layout is the op table's)
local cat_layout = require("ops").cat.layout
ops_cuda.cat = {
  forward = function(e, n)
    local di, inner = cat_layout(n)
    local lines, offset = {}, 0
    for _, x in ipairs(n.inputs) do
      local ops = { { "x", e.val(x), "r" }, { "y", e.val(n.out), "w" } }
      local k = e.kernel { kind = "cat", ops = ops, params = "long long n, long long xd, long long od, long long off",
        body = GRID .. " {\n        long long o = i / xd, r = i % xd;\n        st_y(o * od + off + r, ld_x(i));\n    }" }
      local count = e.numel(x)
      for _, l in ipairs(e.launch(k, ops, { { "long long", count }, { "long long", x.shape[di] * inner },
          { "long long", n.out.shape[di] * inner }, { "long long", offset * inner } }, { grid = count })) do lines[#lines + 1] = l end
      offset = offset + x.shape[di]
    end
    return lines
  end,
  backward = function(e, n)
    local di, inner = cat_layout(n)
    local lines, offset = {}, 0
    for _, x in ipairs(n.inputs) do
      if e.grad(x) then
        local ops = { { "dy", e.grad(n.out), "r" }, { "dx", e.grad(x), "a" } }
        local k = e.kernel { kind = "cat_grad", ops = ops, params = "long long n, long long xd, long long od, long long off",
          body = GRID .. " {\n        long long o = i / xd, r = i % xd;\n        acc_dx(i, ld_dy(o * od + off + r));\n    }" }
        local count = e.numel(x)
        for _, l in ipairs(e.launch(k, ops, { { "long long", count }, { "long long", x.shape[di] * inner },
            { "long long", n.out.shape[di] * inner }, { "long long", offset * inner } }, { grid = count })) do lines[#lines + 1] = l end
      end
      offset = offset + x.shape[di]
    end
    return lines
  end,
}

---------------------------------------------------------------------------
-- losses: one block (the batch's loss is one number)

local REDUCTION = { mean = 1, sum = 2 }

ops_cuda.cross_entropy = {
  forward = function(e, n)
    local x, t, a = n.inputs[1], n.inputs[2], n.attrs
    local C, S = x.shape[2], dims_after(x.shape, 3)
    local ops = { { "x", e.val(x), "r" }, { "loss", e.val(n.out), "w" } }
    local k = e.kernel { kind = "cross_entropy", ops = ops,
      params = "long long n, int C, long long S, const long long *target, float *logp, long long ignore, float eps, int reduction",
      body = "double total = 0, count = 0;\n    " .. BLOCK .. [[ {
        long long b = i / S, s = i % S;
        float mx = -__int_as_float(0x7f800000);
        for (int c = 0; c < C; c++) { float v = ld_x((b * C + c) * S + s); if (v > mx) mx = v; }
        double se = 0;
        for (int c = 0; c < C; c++) se += expf(ld_x((b * C + c) * S + s) - mx);
        const float lse = mx + logf((float)se);
        float sum = 0;
        for (int c = 0; c < C; c++) {
            float lp = ld_x((b * C + c) * S + s) - lse;
            logp[(b * C + c) * S + s] = lp;
            sum += lp;
        }
        long long y = target[i];
        if (y != ignore) {
            float l = -(1 - eps) * logp[(b * C + y) * S + s];
            if (eps > 0) l -= eps / C * sum;
            total += l;
            count += 1;
        }
    }
    total = block_sum(total);
    count = block_sum(count);
    if (threadIdx.x == 0) st_loss(0, (float)(reduction == 1 ? total / count : total));]] }
    return e.launch(k, ops, { { "long long", string.format("(long long)%s * %d", e.batch(x), S) }, { "int", C }, { "long long", S },
      { "void *", e.val(t).ptr }, { "void *", e.save(n, "logp") }, { "long long", a.ignore_index }, { "float", e.lit(a.label_smoothing) },
      { "int", REDUCTION[a.reduction] } }, { blocks = 1 })
  end,
  backward = function(e, n)
    local x, t, a = n.inputs[1], n.inputs[2], n.attrs
    local C, S = x.shape[2], dims_after(x.shape, 3)
    local ops = { { "dl", e.grad(n.out), "r" }, { "dx", e.grad(x), "a" } }
    local k = e.kernel { kind = "cross_entropy_grad", ops = ops,
      params = "long long n, int C, long long S, const long long *target, const float *logp, long long ignore, float eps, int reduction",
      body = "double count = 0;\n    " .. BLOCK .. " count += target[i] != ignore;\n    count = block_sum(count);\n" ..
             "    const float g = reduction == 1 ? (float)(ld_dl(0) / count) : ld_dl(0);\n    " .. BLOCK .. [[ {
        long long b = i / S, s = i % S, y = target[i];
        if (y == ignore) continue;
        for (int c = 0; c < C; c++) {
            long long j = (b * C + c) * S + s;
            acc_dx(j, so_ce_grad(g, logp[j], so_ce_q(c == y, eps, C)));
        }
    }]] }
    return e.launch(k, ops, { { "long long", string.format("(long long)%s * %d", e.batch(x), S) }, { "int", C }, { "long long", S },
      { "void *", e.val(t).ptr }, { "void *", e.save(n, "logp") }, { "long long", a.ignore_index }, { "float", e.lit(a.label_smoothing) },
      { "int", REDUCTION[a.reduction] } }, { blocks = 1 })
  end,
}

ops_cuda.bce = {
  forward = function(e, n)
    local p, t = n.inputs[1], n.inputs[2]
    local ops = { { "p", e.val(p), "r" }, { "t", e.val(t), "r" }, { "loss", e.val(n.out), "w" } }
    local k = e.kernel { kind = "bce", ops = ops, params = "long long n, int reduction",
      body = "double total = 0;\n    " .. BLOCK .. " total += so_bce(ld_p(i), ld_t(i));\n    total = block_sum(total);\n" ..
             "    if (threadIdx.x == 0) st_loss(0, (float)(reduction == 1 ? total / n : total));" }
    return e.launch(k, ops, { { "long long", e.numel(p) }, { "int", REDUCTION[n.attrs.reduction] } }, { blocks = 1 })
  end,
  backward = function(e, n)
    local p, t = n.inputs[1], n.inputs[2]
    local ops = { { "dl", e.grad(n.out), "r" }, { "p", e.val(p), "r" }, { "t", e.val(t), "r" }, { "dp", e.grad(p), "a" } }
    return pointwise(e, "bce_grad", ops,
      "const float g = reduction == 1 ? (float)(ld_dl(0) / (double)n) : ld_dl(0);\n        acc_dp(i, so_bce_grad(g, ld_p(i), ld_t(i)));",
      e.numel(p), "int reduction", { { "int", REDUCTION[n.attrs.reduction] } })
  end,
}

-- dropout: the CPU kernel's mask (k_dropout_*: Philox at (m->seed, m->step << 20 | node
-- index, element)), recomputed by the backward; scalar_ops.h's so_dropout_keep is
-- runtime/philox.h's philox_uniform_at, so the device drops exactly the CPU's elements.
-- Out of training (or p = 0) it copies.  The step is read on the device (m->d_step,
-- the step's constants): a captured step replays with each step's mask.
local STREAM = "const so_u64 stream = *step << 20 | op;\n        "
ops_cuda.dropout = {
  forward = function(e, n)
    local ops = { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }
    return pointwise(e, "dropout", ops,
      STREAM .. "st_y(i, on ? so_dropout(ld_x(i), so_dropout_keep(seed, stream, (so_u64)i, p), so_dropout_scale(p)) : ld_x(i));",
      e.numel(n.out), "float p, so_u64 seed, const so_u64 *step, unsigned op, int on",
      { { "float", e.lit(n.attrs.p) }, { "unsigned long long", "m->seed" }, { "void *", "m->d_step" },
        { "unsigned", string.format("%du", n.index) }, { "int", n.attrs.p == 0 and "0" or "training" } })
  end,
  backward = function(e, n)
    local dx = e.grad(n.inputs[1])
    if not dx then return {} end
    local ops = { { "dy", e.grad(n.out), "r" }, { "dx", dx, "a" } }
    return pointwise(e, "dropout_grad", ops,
      STREAM .. "if (!on) acc_dx(i, ld_dy(i));\n        else if (so_dropout_keep(seed, stream, (so_u64)i, p)) acc_dx(i, so_dropout(ld_dy(i), 1, so_dropout_scale(p)));",
      e.numel(n.out), "float p, so_u64 seed, const so_u64 *step, unsigned op, int on",
      { { "float", e.lit(n.attrs.p) }, { "unsigned long long", "m->seed" }, { "void *", "m->d_step" },
        { "unsigned", string.format("%du", n.index) }, { "int", n.attrs.p == 0 and "0" or "1" } })
  end,
}

-- which reductions the loss kernels implement (checked by emit_cuda)
ops_cuda.supported = function(node)
  if node.op == "conv2d" and node.attrs.groups ~= 1 then return "grouped convolution" end
  if node.op == "max_pool2d" and node.attrs.dilation and (node.attrs.dilation[1] ~= 1 or node.attrs.dilation[2] ~= 1) then
    return "dilated max pooling"
  end
  if (node.op == "cross_entropy" or node.op == "bce") and not REDUCTION[node.attrs.reduction] then
    return "reduction '" .. tostring(node.attrs.reduction) .. "'"
  end
  if node.op == "cross_entropy" and node.inputs[2].dtype ~= "int64" then return "cross entropy with probability targets" end
  return nil
end

return ops_cuda
