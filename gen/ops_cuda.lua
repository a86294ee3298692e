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
--   e.state(node, name), e.counter(node, name)   module buffers (state_t) and counters
--   e.numel(t), e.rows(t, k), e.outer(t, d), e.batch(t)   sizes: numbers, or Sizes that name B
--                               (gen/operands.lua; tostring gives the C expression)
--   e.kernel{...}, e.launch(k, ...), e.gemm{...}, e.scratch(n, fmt) (n: elements at the largest batch, a number)
--
-- A pointwise op (activations, add/sub/mul/div, dropout, cast) has no forward/backward
-- here but a `pointwise` rule: its scalar description, from which gen/fuse_cuda.lua
-- builds the kernels of the fuse group it is in.
local ops_cuda = {}
local operands = require "operands"
local times, scaled, by = operands.times, operands.scaled, operands.by

-- the elements of dims first.. of `shape`: a number, or a Size where B is among them (a
-- tensor whose batch dimension is not first)
local function dims_after(shape, first)
  return operands.count(shape, first, #shape, "(long long)B")
end
-- a * b for sizes: a number while both are
local function mul(a, b)
  if math.type(a) == "integer" and math.type(b) == "integer" then return a * b end
  return scaled(a, b)
end

-- a float literal of CUDA C (infinity spelled as bits: NVRTC has no <math.h>)
function ops_cuda.literal(v) return require("util").c_float(v, "f", true, "__int_as_float(0x7f800000)") end

-- a float literal of the host code (model.cu includes <math.h>)
local function host_literal(v) return require("util").c_float(v, "f", true) end

-- a grid-stride loop over i in [0, n) (gen/fuse_cuda.lua's kernels use it too)
local GRID = "for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)"
ops_cuda.GRID = GRID
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
  if #x.shape == 3 then   -- conv1d: a height of 1 (weight (O, I/g, K) is (O, I/g, 1, K)), as the CPU's
    return { C = x.shape[2], H = 1, W = x.shape[3], OC = w.shape[1], KH = 1, KW = w.shape[3], SH = 1, SW = a.stride[1],
             PH = 0, PW = a.padding[1], DH = 1, DW = a.dilation[1], OH = 1, OW = n.out.shape[3], G = a.groups }
  end
  return { C = x.shape[2], H = x.shape[3], W = x.shape[4], OC = w.shape[1], KH = w.shape[3], KW = w.shape[4],
           SH = a.stride[1], SW = a.stride[2], PH = a.padding[1], PW = a.padding[2], DH = a.dilation[1], DW = a.dilation[2],
           OH = n.out.shape[3], OW = n.out.shape[4], G = a.groups }
end
-- A convolution's GEMM: with groups, one strided batch of G GEMMs, group g's rows of W
-- (OC/G of them), of cols (C/G·KH·KW) and of Yt (OC/G) at g times their size.  `q`
-- is e.gemm's with the whole operands' sizes; `per` gives the per-group M, N, K and
-- each operand's per-group stride.
local function conv_gemm(e, g, q, per)
  if g.G == 1 then return e.gemm(q) end
  q.M, q.N, q.K = per.M, per.N, per.K
  q.batch, q.sA, q.sB, q.sC = g.G, per.sA, per.sB, per.sC
  q.nA, q.nB, q.nC = per.nA, per.nB, per.nC
  return e.gemm(q)
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
  local count = scaled(g.C * g.KH * g.KW, np)
  local args = { { "long long", count }, { "long long", np } }
  for _, a in ipairs(geom_args(g)) do args[#args + 1] = a end
  return e.launch(k, ops, args, { grid = count })
end

-- the pieces both convolutions use (a transposed convolution is a convolution's
-- backward of the data run forward, with the roles of input and output swapped):
-- dst (OC, B·P) = src (B, OC, P) permuted, in the GEMMs' format
local function conv_rows(e, src, dst, g, np)
  local ops = { { "dy", src, "r" }, { "dyt", dst, "w" } }
  local k = e.kernel { kind = "conv_dyt", ops = ops, params = "long long n, long long NP, int OC, long long P",
    body = GRID .. " {\n        long long c = i / NP, col = i % NP, bi = col / P, p = col % P;\n" ..
           "        st_dyt(i, ld_dy((bi * OC + c) * P + p));\n    }" }
  local count = scaled(g.OC, np)
  return e.launch(k, ops, { { "long long", count }, { "long long", np }, { "int", g.OC }, { "long long", g.OH * g.OW } }, { grid = count })
end
-- Yt (OC, B·P) = W · cols; dW += dYt · colsᵀ; dcols = Wᵀ · dYt (per group)
local function conv_gemm_forward(e, g, what, w, cols, yt, np)
  local ckk = g.C * g.KH * g.KW
  local OCg, Kc = g.OC // g.G, ckk // g.G
  return conv_gemm(e, g, { what = what, ta = 0, tb = 0, M = g.OC, N = np, K = ckk, A = w, B = cols, C = yt },
    { M = OCg, N = np, K = Kc, sA = OCg * Kc, sB = scaled(Kc, np), sC = scaled(OCg, np),
      nA = g.OC * Kc, nB = scaled(ckk, np), nC = scaled(g.OC, np) })
end
local function conv_gemm_dw(e, g, what, dyt, cols, dw, np)
  local ckk = g.C * g.KH * g.KW
  local OCg, Kc = g.OC // g.G, ckk // g.G
  return conv_gemm(e, g, { what = what, ta = 0, tb = 1, M = g.OC, N = ckk, K = np, A = dyt, B = cols, C = dw, accumulate = true },
    { M = OCg, N = Kc, K = np, sA = scaled(OCg, np), sB = scaled(Kc, np),
      sC = OCg * Kc, nA = scaled(g.OC, np), nB = scaled(ckk, np), nC = g.OC * Kc })
end
local function conv_gemm_dcols(e, g, what, w, dyt, dcols, np)
  local ckk = g.C * g.KH * g.KW
  local OCg, Kc = g.OC // g.G, ckk // g.G
  return conv_gemm(e, g, { what = what, ta = 1, tb = 0, M = ckk, N = np, K = g.OC, A = w, B = dyt, C = dcols },
    { M = Kc, N = np, K = OCg, sA = OCg * Kc, sB = scaled(OCg, np), sC = scaled(Kc, np),
      nA = g.OC * Kc, nB = scaled(g.OC, np), nC = scaled(ckk, np) })
end
-- out (B, OC, P) = Yt (OC, B·P) permuted (+ bias), stored; or (acc) added into a gradient
local function conv_out(e, yt, out, b, g, np, B, acc)
  local ops = { { "yt", yt, "r" }, { "y", out, acc and "a" or "w" } }
  if b then ops[#ops + 1] = { "bias", b, "r" } end
  local k = e.kernel { kind = (acc and "conv_out_acc" or "conv_out") .. (b and "_bias" or ""), ops = ops,
    params = "long long n, long long NP, int OC, long long P",
    body = GRID .. " {\n        long long bi = i / ((long long)OC * P), c = (i / P) % OC, p = i % P;\n" ..
           "        float v = ld_yt(c * NP + bi * P + p);\n" .. (b and "        v += ld_bias(c);\n" or "") ..
           (acc and "        acc_y(i, v);\n    }" or "        st_y(i, v);\n    }") }
  local count = by(B, g.OC * g.OH * g.OW)
  return e.launch(k, ops, { { "long long", count }, { "long long", np }, { "int", g.OC }, { "long long", g.OH * g.OW } },
    { grid = count })
end
-- x (B, C, H, W) from dcols (C·KH·KW, B·P), a gather (each element sums the columns that
-- hold it: no atomics): added into a gradient, or (store) stored with a bias
local function col2im(e, dcols, dst, b, g, np, B, store)
  local ops = { { "dcols", dcols, "r" }, { "dx", dst, store and "w" or "a" } }
  if b then ops[#ops + 1] = { "bias", b, "r" } end
  local finish = store and ("st_dx(i, s" .. (b and " + ld_bias((int)c)" or "") .. ");") or "acc_dx(i, s);"
  local k = e.kernel { kind = store and ("col2im_store" .. (b and "_bias" or "")) or "col2im", ops = ops,
    params = "long long n, long long NP, " .. GEOM,
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
        ]] .. finish .. "\n    }" }
  local xcount = by(B, g.C * g.H * g.W)
  local args = { { "long long", xcount }, { "long long", np } }
  for _, a in ipairs(geom_args(g)) do args[#args + 1] = a end
  return e.launch(k, ops, args, { grid = xcount })
end
-- db (OC) += dy's sums over batch and positions, one block per channel
local function conv_bias_grad(e, dy, db, OC, P, B)
  local bops = { { "dy", dy, "r" }, { "db", db, "a" } }
  local bk = e.kernel { kind = "bias_grad_channels", ops = bops, params = "long long n, int OC, long long P",
    body = "const int c = blockIdx.x;\n    double s = 0;\n    " .. BLOCK ..
           " s += ld_dy((i / P * OC + c) * P + i % P);\n    s = block_sum(s);\n    if (threadIdx.x == 0) acc_db(c, (float)s);" }
  return e.launch(bk, bops, { { "long long", by(B, P) }, { "int", OC }, { "long long", P } }, { blocks = OC })
end

ops_cuda.conv2d = {
  forward = function(e, n)
    local x, w, b = n.inputs[1], n.inputs[2], n.inputs[3]
    local g = conv_geometry(n)
    local B = e.batch(x)
    local np = by(B, g.OH * g.OW)
    local F = e.gemm_format(e.val(x), e.val(w))
    local ckk = g.C * g.KH * g.KW
    local np_max = e.count_max(x.shape, 1, 1) * g.OH * g.OW
    local cols = e.scratch(ckk * np_max, F)
    local yt = e.scratch(g.OC * np_max, "f32")
    local lines = im2col(e, e.val(x), cols, g, np, B)
    for _, l in ipairs(conv_gemm_forward(e, g, "conv2d forward", e.val(w), cols, yt, np)) do lines[#lines + 1] = l end
    for _, l in ipairs(conv_out(e, yt, e.val(n.out), b and e.val(b), g, np, B)) do lines[#lines + 1] = l end
    return lines
  end,
  backward = function(e, n)
    local x, w, b = n.inputs[1], n.inputs[2], n.inputs[3]
    local g = conv_geometry(n)
    local B = e.batch(x)
    local P = g.OH * g.OW
    local np = by(B, P)
    local dy = e.grad(n.out)
    local F = e.gemm_format(dy, e.val(w))
    local ckk = g.C * g.KH * g.KW
    local lines = {}
    local function add(t) for _, l in ipairs(t) do lines[#lines + 1] = l end end
    -- dYt (OC, B·P) in the GEMMs' format
    local np_max = e.count_max(x.shape, 1, 1) * P
    local dyt = e.scratch(g.OC * np_max, F)
    add(conv_rows(e, dy, dyt, g, np))
    if b and e.grad(b) then add(conv_bias_grad(e, dy, e.grad(b), g.OC, P, B)) end
    if e.grad(w) then
      local cols = e.scratch(ckk * np_max, F)
      add(im2col(e, e.val(x), cols, g, np, B))
      add(conv_gemm_dw(e, g, "conv2d dW", dyt, cols, e.grad(w), np))
    end
    if e.grad(x) then
      local dcols = e.scratch(ckk * np_max, "f32")
      add(conv_gemm_dcols(e, g, "conv2d dx", e.val(w), dyt, dcols, np))
      add(col2im(e, dcols, e.grad(x), nil, g, np, B))
    end
    return lines
  end,
}

-- ConvTranspose2d/1d: the convolution from y (B, Cout, H, W) to x (B, Cin, OH, OW) with
-- the same weight (Cin, Cout/G, KH, KW), run the other way: forward y = col2im(Wᵀ · xt)
-- + bias; backward dx += W · im2col(dy), dW += xt · im2col(dy)ᵀ, db += dy's sums
local function conv_t_geometry(n)
  local x, y, a = n.inputs[1], n.out, n.attrs
  local nd = #a.kernel_size
  local function hw(shape) if nd == 1 then return 1, shape[3] end return shape[3], shape[4] end
  local function pair(t, one) if nd == 1 then return one, t[1] end return t[1], t[2] end
  local g = { C = y.shape[2], OC = x.shape[2], G = a.groups }
  g.H, g.W = hw(y.shape)
  g.OH, g.OW = hw(x.shape)
  g.KH, g.KW = pair(a.kernel_size, 1)
  g.SH, g.SW = pair(a.stride, 1)
  g.PH, g.PW = pair(a.padding, 0)
  g.DH, g.DW = pair(a.dilation, 1)
  return g
end
ops_cuda.conv_transpose = {
  forward = function(e, n)
    local x, w, b = n.inputs[1], n.inputs[2], n.inputs[3]
    local g = conv_t_geometry(n)
    local B = e.batch(x)
    local np = by(B, g.OH * g.OW)
    local F = e.gemm_format(e.val(x), e.val(w))
    local np_max = e.count_max(x.shape, 1, 1) * g.OH * g.OW
    local xt = e.scratch(g.OC * np_max, F)
    local dcols = e.scratch(g.C * g.KH * g.KW * np_max, "f32")
    local lines = conv_rows(e, e.val(x), xt, g, np)
    for _, l in ipairs(conv_gemm_dcols(e, g, "conv_transpose forward", e.val(w), xt, dcols, np)) do lines[#lines + 1] = l end
    for _, l in ipairs(col2im(e, dcols, e.val(n.out), b and e.val(b), g, np, B, true)) do lines[#lines + 1] = l end
    return lines
  end,
  backward = function(e, n)
    local x, w, b = n.inputs[1], n.inputs[2], n.inputs[3]
    local g = conv_t_geometry(n)
    local B = e.batch(x)
    local np = by(B, g.OH * g.OW)
    local dy = e.grad(n.out)
    local F = e.gemm_format(dy, e.val(w))
    local ckk = g.C * g.KH * g.KW
    local np_max = e.count_max(x.shape, 1, 1) * g.OH * g.OW
    local lines = {}
    local function add(t) for _, l in ipairs(t) do lines[#lines + 1] = l end end
    if b and e.grad(b) then add(conv_bias_grad(e, dy, e.grad(b), g.C, g.H * g.W, B)) end
    if not (e.grad(x) or e.grad(w)) then return lines end
    local cols = e.scratch(ckk * np_max, F)
    add(im2col(e, dy, cols, g, np, B))
    if e.grad(w) then
      local xt = e.scratch(g.OC * np_max, F)
      add(conv_rows(e, e.val(x), xt, g, np))
      add(conv_gemm_dw(e, g, "conv_transpose dW", xt, cols, e.grad(w), np))
    end
    if e.grad(x) then
      local yt = e.scratch(g.OC * np_max, "f32")
      add(conv_gemm_forward(e, g, "conv_transpose dx", e.val(w), cols, yt, np))
      add(conv_out(e, yt, e.grad(x), nil, g, np, B, true))
    end
    return lines
  end,
}

---------------------------------------------------------------------------
-- pooling (max: argmax saved as the index in the input plane, as the CPU does).
-- Windows start at oh·SH - PH and step by the dilation; the backward is a gather (each
-- input sums the outputs whose window holds it, in the CPU's output order): no atomics.

local function pool_geometry(n)
  local x, a = n.inputs[1], n.attrs
  local dil = a.dilation or { 1, 1 }
  return { H = x.shape[3], W = x.shape[4], KH = a.kernel_size[1], KW = a.kernel_size[2], SH = a.stride[1], SW = a.stride[2],
           PH = a.padding[1], PW = a.padding[2], DH = dil[1], DW = dil[2], OH = n.out.shape[3], OW = n.out.shape[4] }
end
local PGEOM = "const int H, const int W, const int KH, const int KW, const int SH, const int SW, const int PH, const int PW, " ..
              "const int DH, const int DW, const int OH, const int OW"
-- launches pooling kernel k over `count` elements: (n, the kernel's own argument, then
-- the geometry: PGEOM)
local function pool_launch(e, k, ops, count, own, g)
  local args = { { "long long", count }, own }
  for _, d in ipairs { "H", "W", "KH", "KW", "SH", "SW", "PH", "PW", "DH", "DW", "OH", "OW" } do args[#args + 1] = { "int", g[d] } end
  return e.launch(k, ops, args, { grid = count })
end
-- the outputs (oh, ow) whose window holds input (h, w), in increasing order: `body` runs
-- for each, with o its index in the plane's outputs
local function windows_holding(body)
  return [[
        for (int kh = KH - 1; kh >= 0; kh--) {
            const int th = h + PH - kh * DH;
            if (th < 0 || th % SH) continue;
            const int oh = th / SH;
            if (oh >= OH) continue;
            for (int kw = KW - 1; kw >= 0; kw--) {
                const int tw = w + PW - kw * DW;
                if (tw < 0 || tw % SW) continue;
                const int ow = tw / SW;
                if (ow >= OW) continue;
                const long long o = plane * OH * OW + oh * OW + ow;
                ]] .. body .. [[

            }
        }]]
end
-- a pooling backward: input element i sums `term` (adding into s) over the windows holding it
local function pool_grad_body(term)
  return GRID .. [[ {
        long long plane = i / ((long long)H * W);
        int idx = (int)(i % ((long long)H * W)), h = idx / W, w = idx % W;
        float s = 0;
]] .. windows_holding(term) .. [[

        acc_dx(i, s);
    }]]
end

ops_cuda.max_pool2d = {
  forward = function(e, n)
    local g = pool_geometry(n)
    local ops = { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }
    local k = e.kernel { kind = "max_pool2d", ops = ops, params = "long long n, int *argmax, " .. PGEOM,
      body = GRID .. [[ {
        long long plane = i / ((long long)OH * OW), p = i % ((long long)OH * OW);
        int oh = (int)(p / OW), ow = (int)(p % OW);
        int h0 = oh * SH - PH, h1 = h0 + (KH - 1) * DH + 1, w0 = ow * SW - PW, w1 = w0 + (KW - 1) * DW + 1;
        if (h1 > H) h1 = H;
        if (w1 > W) w1 = W;
        while (h0 < 0) h0 += DH;
        while (w0 < 0) w0 += DW;
        float best = -__int_as_float(0x7f800000);
        int besti = h0 * W + w0;
        for (int h = h0; h < h1; h += DH)
            for (int w = w0; w < w1; w += DW) {
                float v = ld_x(plane * H * W + h * W + w);
                if (v > best || v != v) { best = v; besti = h * W + w; }
            }
        st_y(i, best);
        if (argmax) argmax[i] = besti;
    }]] }
    return pool_launch(e, k, ops, e.numel(n.out), { "void *", "training ? " .. e.save(n, "argmax") .. " : NULL" }, g)
  end,
  backward = function(e, n)
    local g = pool_geometry(n)
    local ops = { { "dy", e.grad(n.out), "r" }, { "dx", e.grad(n.inputs[1]), "a" } }
    local k = e.kernel { kind = "max_pool2d_grad", ops = ops, params = "long long n, const int *argmax, " .. PGEOM,
      body = pool_grad_body("if (argmax[o] == idx) s += ld_dy(o);") }
    return pool_launch(e, k, ops, e.numel(n.inputs[1]), { "void *", e.save(n, "argmax") }, g)
  end,
}

-- average: the window clipped to the input, divided by scalar_ops' so_avg_pool_divisor
-- (count_include_pad; ceil_mode is in the output size)
ops_cuda.avg_pool2d = {
  forward = function(e, n)
    local g = pool_geometry(n)
    local ops = { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }
    local k = e.kernel { kind = "avg_pool2d", ops = ops, params = "long long n, int count_include_pad, " .. PGEOM,
      body = GRID .. [[ {
        long long plane = i / ((long long)OH * OW), p = i % ((long long)OH * OW);
        const int hs = (int)(p / OW) * SH - PH, ws = (int)(p % OW) * SW - PW;
        const int div = so_avg_pool_divisor(hs, ws, KH, KW, H, W, PH, PW, count_include_pad);
        const int h0 = hs < 0 ? 0 : hs, h1 = hs + KH < H ? hs + KH : H, w0 = ws < 0 ? 0 : ws, w1 = ws + KW < W ? ws + KW : W;
        float s = 0;
        for (int h = h0; h < h1; h++)
            for (int w = w0; w < w1; w++) s += ld_x(plane * H * W + h * W + w);
        st_y(i, s / div);
    }]] }
    return pool_launch(e, k, ops, e.numel(n.out), { "int", n.attrs.count_include_pad == false and 0 or 1 }, g)
  end,
  backward = function(e, n)
    local g = pool_geometry(n)
    local ops = { { "dy", e.grad(n.out), "r" }, { "dx", e.grad(n.inputs[1]), "a" } }
    local k = e.kernel { kind = "avg_pool2d_grad", ops = ops, params = "long long n, int count_include_pad, " .. PGEOM,
      body = pool_grad_body("s += ld_dy(o) / so_avg_pool_divisor(oh * SH - PH, ow * SW - PW, KH, KW, H, W, PH, PW, count_include_pad);") }
    return pool_launch(e, k, ops, e.numel(n.inputs[1]), { "int", n.attrs.count_include_pad == false and 0 or 1 }, g)
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
    -- (a list per kernel: e.kernel adds the fused tail's operands to it)
    local function train_ops()
      local o = { { "x", e.val(x), "r" }, { "y", e.val(n.out), "w" } }
      if w then o[#o + 1] = { "wt", e.val(w), "r" } end
      if b then o[#o + 1] = { "bs", e.val(b), "r" } end
      return o
    end
    local scale = w and "ld_wt(c) * invstd" or "invstd"
    local shift = b and "ld_bs(c)" or "0.0f"
    -- a training kernel's end, once mean, ss (the sum of squared deviations) and invstd are
    -- known over `count` values: normalize, save, and move the running statistics
    local function finish(count)
      return [[const float scale = ]] .. scale .. ", shift = " .. shift .. [[;
    ]] .. BLOCK .. [[ {
        long long j = (i / S * C + c) * S + i % S;
        st_y(j, so_bn_apply(ld_x(j), m, scale, shift));
    }
    if (threadIdx.x == 0) {
        double f = momentum;
        if (momentum < 0 && tracked) f = 1.0 / (double)*tracked;
        if (save_mean) save_mean[c] = m;
        if (save_invstd) save_invstd[c] = invstd;
        // in the state's format (bf16-true, 16-true: widened, updated in float, rounded)
        if (running_mean) running_mean[c] = state_narrow((float)((1 - f) * state_widen(running_mean[c]) + f * mean));
        if (running_var) running_var[c] = state_narrow((float)((1 - f) * state_widen(running_var[c]) + f * (]] .. count ..
        [[ > 1 ? ss / (]] .. count .. [[ - 1) : 0.0 / 0.0)));
    }]]
    end
    local sync = e.synced(n)
    local ops = train_ops()
    local k = (not sync or not a.track_running_stats) and e.kernel { kind = "batch_norm_train" .. (w and "_w" or "") .. (b and "_b" or ""), ops = ops,
      params = "long long n, int C, long long S, float eps, float momentum, float *save_mean, float *save_invstd, " ..
               "state_t *running_mean, state_t *running_var, const long long *tracked",
      body = [[const int c = blockIdx.x;
    double sum = 0, ss = 0;
    ]] .. BLOCK .. [[ sum += ld_x((i / S * C + c) * S + i % S);
    const double mean = block_sum(sum) / n;
    ]] .. BLOCK .. [[ { double d = ld_x((i / S * C + c) * S + i % S) - mean; ss += d * d; }
    ss = block_sum(ss);
    const float invstd = (float)(1.0 / sqrt(ss / n + eps)), m = (float)mean;
    ]] .. finish("n") }
    local count = by(e.batch(x), S)
    local momentum = a.momentum == false and -1 or a.momentum
    local function train_lines(sync)
      local train = {}
      if counter ~= "NULL" then
        local ck = e.kernel { kind = "counter_inc", ops = {}, params = "long long *counter",
                              body = "if (threadIdx.x == 0 && blockIdx.x == 0) *counter += 1;" }
        for _, l in ipairs(e.launch(ck, {}, { { "void *", counter } }, { blocks = 1, threads = 32 })) do train[#train + 1] = l end
      end
      local kt, kops = k, ops
      local args = { { "long long", count }, { "int", C }, { "long long", S }, { "float", e.lit(a.eps) },
        { "float", e.lit(momentum) }, { "void *", e.save(n, "mean") }, { "void *", e.save(n, "invstd") },
        { "void *", e.state(n, "running_mean") }, { "void *", e.state(n, "running_var") }, { "void *", counter } }
      if sync then   -- SyncBatchNorm: this rank's sums, their sum over the ranks, then normalize
        local sums = e.scratch(2 * (2 * C + 1), "f32")   -- (2C+1 doubles)
        local sk = e.kernel { kind = "batch_norm_sums", ops = { { "x", e.val(x), "r" } }, params = "long long n, int C, long long S, double *sums",
          body = [[const int c = blockIdx.x;
    double sum = 0, ss = 0;
    ]] .. BLOCK .. [[ { double v = ld_x((i / S * C + c) * S + i % S); sum += v; ss += v * v; }
    sum = block_sum(sum);
    ss = block_sum(ss);
    if (threadIdx.x == 0) { sums[c] = sum; sums[C + c] = ss; if (c == 0) sums[2 * C] = (double)n; }]] }
        for _, l in ipairs(e.launch(sk, { { "x", e.val(x), "r" } }, { { "long long", count }, { "int", C }, { "long long", S },
            { "void *", sums.ptr } }, { blocks = C })) do train[#train + 1] = l end
        train[#train + 1] = e.ranks_sum(sums.ptr, 2 * C + 1)
        args[#args + 1] = { "const void *", sums.ptr }
        kops = train_ops()
        kt = e.kernel { kind = "batch_norm_synced" .. (w and "_w" or "") .. (b and "_b" or ""), ops = kops,
          params = "long long n, int C, long long S, float eps, float momentum, float *save_mean, float *save_invstd, " ..
                   "state_t *running_mean, state_t *running_var, const long long *tracked, const double *sums",
          -- (the global count M and sums; mean = sum/M, var = sum x^2/M - mean^2 in double, as the CPU's k_batch_norm_forward_synced)
          body = [[const int c = blockIdx.x;
    const double M = sums[2 * C], mean = sums[c] / M;
    double ss = sums[C + c] - sums[c] * mean;
    if (ss < 0) ss = 0;   // rounding: the variance is never negative
    const float invstd = (float)(1.0 / sqrt(ss / M + eps)), m = (float)mean;
    ]] .. finish("M") }
      end
      for _, l in ipairs(e.launch(kt, kops, args, { blocks = C })) do train[#train + 1] = l end
      return train
    end
    local train = train_lines(sync)
    -- no running statistics: batch statistics in eval too, each rank's own there
    -- (torch.nn.SyncBatchNorm syncs in training only)
    if not a.track_running_stats then
      if not sync then return train end
      local lines = { "if (training) {" }
      for _, l in ipairs(train) do lines[#lines + 1] = "    " .. l end
      lines[#lines + 1] = "} else {"
      for _, l in ipairs(train_lines(false)) do lines[#lines + 1] = "    " .. l end
      lines[#lines + 1] = "}"
      return lines
    end
    local eops = { { "x", e.val(x), "r" }, { "y", e.val(n.out), "w" } }
    if w then eops[#eops + 1] = { "wt", e.val(w), "r" } end
    if b then eops[#eops + 1] = { "bs", e.val(b), "r" } end
    local ek = e.kernel { kind = "batch_norm_eval" .. (w and "_w" or "") .. (b and "_b" or ""), ops = eops,
      params = "long long n, int C, long long S, float eps, const state_t *running_mean, const state_t *running_var",
      body = GRID .. " {\n        const int c = (int)(i / S % C);\n        const float invstd = 1 / sqrtf(state_widen(running_var[c]) + eps);\n" ..
             "        const float scale = " .. scale .. ", shift = " .. shift .. " - state_widen(running_mean[c]) * scale;\n" ..
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
    local args = { { "long long", by(e.batch(x), S) }, { "int", C }, { "long long", S },
      { "void *", e.save(n, "mean") }, { "void *", e.save(n, "invstd") } }
    if dx and e.synced(n) then
      -- SyncBatchNorm: dx's means of dout and dout*xhat are over every rank's batch (this
      -- rank's sums, their sum over the ranks, then dx); dw and db stay this rank's (DDP
      -- averages them with the other gradients), as the CPU's k_batch_norm_backward_{sums,synced}
      local sums = e.scratch(2 * (2 * C + 1), "f32")   -- (2C+1 doubles)
      local sops = { ops[1], ops[2] }
      if dw then sops[#sops + 1] = { "dw", dw, "a" } end
      if db then sops[#sops + 1] = { "db", db, "a" } end
      local head = { table.unpack(body, 1, 11) }
      if dw then head[#head + 1] = "    if (threadIdx.x == 0) acc_dw(c, (float)sdyx);" end
      if db then head[#head + 1] = "    if (threadIdx.x == 0) acc_db(c, (float)sdy);" end
      head[#head + 1] = "    if (threadIdx.x == 0) { sums[c] = sdy; sums[C + c] = sdyx; if (c == 0) sums[2 * C] = (double)n; }"
      local k1 = e.kernel { kind = "batch_norm_grad_sums" .. (dw and "_dw" or "") .. (db and "_db" or ""), ops = sops,
        params = "long long n, int C, long long S, const float *save_mean, const float *save_invstd, double *sums",
        body = table.concat(head, "\n") }
      local xops = { ops[1], ops[2], { "dx", dx, "a" } }
      if w then xops[#xops + 1] = { "wt", e.val(w), "r" } end
      local k2 = e.kernel { kind = "batch_norm_grad_synced" .. (w and "_w" or ""), ops = xops,
        params = "long long n, int C, long long S, const float *save_mean, const float *save_invstd, const double *sums",
        body = table.concat({ "const int c = blockIdx.x;",
          "    const float mean = save_mean[c], invstd = save_invstd[c];",
          "    const double M = sums[2 * C];   // the global count",
          "    const float k = " .. (w and "ld_wt(c)" or "1.0f") .. " * invstd, mdy = (float)(sums[c] / M), mdyx = (float)(sums[C + c] / M);",
          "    " .. BLOCK .. " {",
          "        long long j = (i / S * C + c) * S + i % S;",
          "        acc_dx(j, so_bn_grad(ld_dy(j), ld_x(j), mean, invstd, k, mdy, mdyx));",
          "    }" }, "\n") }
      local a1 = { table.unpack(args) }
      a1[#a1 + 1] = { "void *", sums.ptr }
      local lines = e.launch(k1, sops, a1, { blocks = C })
      lines[#lines + 1] = e.ranks_sum(sums.ptr, 2 * C + 1)
      for _, l in ipairs(e.launch(k2, xops, a1, { blocks = C })) do lines[#lines + 1] = l end
      return lines
    end
    local k = e.kernel { kind = "batch_norm_grad" .. (dx and "_x" or "") .. (w and "_w" or "") .. (dw and "_dw" or "") .. (db and "_db" or ""),
      ops = ops, params = "long long n, int C, long long S, const float *save_mean, const float *save_invstd",
      body = table.concat(body, "\n") }
    return e.launch(k, ops, args, { blocks = C })
  end,
}

---------------------------------------------------------------------------
-- pointwise ops, each described once as scalar expressions (scalar_ops.h calls) over
-- its operands' values at one element.  Every pointwise op is in a fuse group
-- (gen/fuse.lua; a group of one at least), whose kernels gen/fuse_cuda.lua builds from
-- these descriptions.
--   key                       names the op in its kernels' names
--   params = { {ctype, name, forward host expr, backward host expr}, ... }
--   value(x, P, I) -> expr    x[k]: operand k's value, P[name]: a parameter, I: the element index
--   grad[k](g, x, y, P, I)    operand k's gradient contribution; y(): the op's output value

local function call(f, ...) return string.format("%s(%s)", f, table.concat({ ... }, ", ")) end

local function activation(name, from_output, key_of)
  ops_cuda[name] = {
    pointwise = function(n)
      local key = key_of and key_of(n) or name
      return { key = key, params = {},
        value = function(x) return call("so_" .. key, x[1]) end,
        grad = { function(g, x, y) return call("so_" .. key .. "_grad", g, from_output and y() or x[1]) end } }
    end,
  }
end
activation("relu", true)
activation("sigmoid", true)
activation("tanh", true)
activation("silu", false)
activation("gelu", false, function(n) return n.attrs.approximate == "tanh" and "gelu_tanh" or "gelu" end)
activation("abs", false)

-- the elementwise functions with constants (gen/ops.lua's UNARY: consts(attrs) gives a, b):
-- so_u_OP / so_u_OP_grad of scalar_ops.h, the derivative of the output where the op's
-- backward reads it
for _, name in ipairs { "leaky_relu", "elu", "mish", "softplus", "hardswish", "hardtanh", "exp", "log", "sqrt", "rsqrt",
                        "pow", "clamp" } do
  ops_cuda[name] = {
    pointwise = function(n)
      local rule = require("ops")[name]
      local a, b = rule.consts(n.attrs)
      a, b = host_literal(a), host_literal(b)
      return { key = name, params = { { "float", "ua", a, a }, { "float", "ub", b, b } },
        value = function(x, P) return call("so_u_" .. name, x[1], P.ua, P.ub) end,
        grad = { function(g, x, y, P) return call("so_u_" .. name .. "_grad", g, rule.backward_reads_output and y() or x[1], P.ua, P.ub) end } }
    end,
  }
end

-- add, sub, mul, div: tensor op tensor (any broadcast: each operand is read at the output
-- element's offset into it), tensor op scalar, scalar op tensor
local function binary(op)
  ops_cuda[op] = {
    pointwise = function(n)
      if not n.inputs[2] then
        local params = { { "float", "s", ops_cuda.literal(n.attrs.scalar), ops_cuda.literal(n.attrs.scalar) } }
        if n.attrs.scalar_left and (op == "sub" or op == "div") then
          return { key = "r" .. op, params = params,
            value = function(x, P) return call("so_" .. op, P.s, x[1]) end,
            grad = { function(g, x, y, P) return call("so_" .. op .. "_db", g, P.s, x[1]) end } }
        end
        return { key = op .. "s", params = params,
          value = function(x, P) return call("so_" .. op, x[1], P.s) end,
          grad = { function(g, x, y, P) return call("so_" .. op .. "_da", g, x[1], P.s) end } }
      end
      return { key = op, params = {},
        value = function(x) return call("so_" .. op, x[1], x[2]) end,
        grad = { function(g, x) return call("so_" .. op .. "_da", g, x[1], x[2]) end,
                 function(g, x) return call("so_" .. op .. "_db", g, x[1], x[2]) end } }
    end,
  }
end
for _, op in ipairs { "add", "sub", "mul", "div" } do binary(op) end
-- maximum, minimum, pow of two tensors (broadcast as add's; no scalar forms)
for _, op in ipairs { "maximum", "minimum", "pow_tensor" } do binary(op) end

-- dropout: the CPU kernel's mask (k_dropout_*: Philox at (m->seed, m->step << 20 | node
-- index, element)), recomputed by the backward; scalar_ops.h's so_dropout_keep is
-- runtime/philox.h's philox_uniform_at, so the device drops exactly the CPU's elements.
-- Out of training (or p = 0) it copies.  The step is read on the device (m->d_step, the
-- step's constants): a step captured once in a CUDA Graph replays with each step's mask.
ops_cuda.dropout = {
  pointwise = function(n)
    local p = n.attrs.p
    local function masked(v, P, I)
      return string.format("(%s ? so_dropout(%s, so_dropout_keep(%s, %s, (so_u64)(%s), %s), so_dropout_scale(%s)) : %s)",
        P.on, v, P.seed, string.format("(*%s << 20 | %s)", P.step, P.op), I, P.p, P.p, v)
    end
    return { key = "dropout",
      params = { { "float", "p", ops_cuda.literal(p), ops_cuda.literal(p) },
                 { "unsigned long long", "seed", "m->seed", "m->seed" },
                 { "const unsigned long long *", "step", "m->d_step", "m->d_step" },
                 { "unsigned", "op", string.format("%du", n.index), string.format("%du", n.index) },
                 { "int", "on", p == 0 and "0" or "training", p == 0 and "0" or "1" } },
      value = function(x, P, I) return masked(x[1], P, I) end,
      grad = { function(g, x, y, P, I) return masked(g, P, I) end } }
  end,
}

-- Dropout2d: whole channels, one draw per (sample, channel) at counter I / S (S: a
-- channel's elements), the CPU's k_dropout2d_* on the same stream
ops_cuda.dropout2d = {
  pointwise = function(n)
    local p, x = n.attrs.p, n.inputs[1]
    local S = string.format("%dLL", dims_after(x.shape, 3))
    local function masked(v, P, I)
      return string.format("(%s ? so_dropout(%s, so_dropout_keep(%s, %s, (so_u64)(%s) / (so_u64)%s, %s), so_dropout_scale(%s)) : %s)",
        P.on, v, P.seed, string.format("(*%s << 20 | %s)", P.step, P.op), I, P.S, P.p, P.p, v)
    end
    return { key = "dropout2d",
      params = { { "float", "p", ops_cuda.literal(p), ops_cuda.literal(p) },
                 { "long long", "S", S, S },
                 { "unsigned long long", "seed", "m->seed", "m->seed" },
                 { "const unsigned long long *", "step", "m->d_step", "m->d_step" },
                 { "unsigned", "op", string.format("%du", n.index), string.format("%du", n.index) },
                 { "int", "on", p == 0 and "0" or "training", p == 0 and "0" or "1" } },
      value = function(x, P, I) return masked(x[1], P, I) end,
      grad = { function(g, x, y, P, I) return masked(g, P, I) end } }
  end,
}

-- a cast the precision pass kept as a kernel: the conversion is in the operands' formats
ops_cuda.cast = {
  pointwise = function()
    return { key = "convert", params = {}, value = function(x) return x[1] end, grad = { function(g) return g end } }
  end,
}

-- the producers whose kernels take an elementwise tail (gen/fuse.lua): the tail goes into
-- the store of the kernel they already run; linear's ReLU into cuBLASLt's epilogue
ops_cuda.conv2d.tail = "kernel"
ops_cuda.conv1d = ops_cuda.conv2d   -- (conv_geometry reads a 1-d one's sizes)
ops_cuda.batch_norm.tail = "kernel"
ops_cuda.linear.tail = "epilogue"

ops_cuda.flatten = {}   -- a view (gen/ops.lua: alias): no kernel
ops_cuda.reshape = {}
ops_cuda.detach = {}

-- cat along `dim` (its layout is the op table's)
local function cat_layout(n)
  local di = require("ops").cat.layout(n)
  return di, dims_after(n.out.shape, di + 1)
end
ops_cuda.cat = {
  forward = function(e, n)
    local di, inner = cat_layout(n)
    local lines, offset = {}, 0
    for _, x in ipairs(n.inputs) do
      local ops = { { "x", e.val(x), "r" }, { "y", e.val(n.out), "w" } }
      local k = e.kernel { kind = "cat", ops = ops, params = "long long n, long long xd, long long od, long long off",
        body = GRID .. " {\n        long long o = i / xd, r = i % xd;\n        st_y(o * od + off + r, ld_x(i));\n    }" }
      local count = e.numel(x)
      for _, l in ipairs(e.launch(k, ops, { { "long long", count }, { "long long", mul(x.shape[di], inner) },
          { "long long", mul(n.out.shape[di], inner) }, { "long long", mul(offset, inner) } }, { grid = count })) do lines[#lines + 1] = l end
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
        for _, l in ipairs(e.launch(k, ops, { { "long long", count }, { "long long", mul(x.shape[di], inner) },
            { "long long", mul(n.out.shape[di], inner) }, { "long long", mul(offset, inner) } }, { grid = count })) do lines[#lines + 1] = l end
      end
      offset = offset + x.shape[di]
    end
    return lines
  end,
}

---------------------------------------------------------------------------
-- losses: one block (the batch's loss is one number)

local REDUCTION = { none = 0, mean = 1, sum = 2 }   -- the CPU's K_REDUCTION_*
local ce_soft_forward, ce_soft_backward   -- probability targets (below)

-- PyTorch's class weights (a loss's third input, C values; the CPU's `weight`): the
-- unweighted kernel's body with each weighted term rewritten (WEIGHTED: {plain text,
-- weighted text} pairs, each of which must occur), read through the operand w, in a
-- kernel of its own kind (KIND_w).  Without weights the kernel is the unweighted one.
local function class_weighted(e, n, kind, ops, body, weighted)
  local w = n.inputs[3]
  if not w then return kind, body end
  ops[#ops + 1] = { "w", e.val(w), "r" }
  for _, r in ipairs(weighted) do
    local at = body:find(r[1], 1, true)
    assert(at, "class_weighted: '" .. r[1] .. "' is not in " .. kind .. "'s body")
    body = body:sub(1, at - 1) .. r[2] .. body:sub(at + #r[1])
  end
  return kind .. "_w", body
end

ops_cuda.cross_entropy = {
  forward = function(e, n)
    if n.inputs[2].dtype ~= "int64" then return ce_soft_forward(e, n) end
    local x, t, a = n.inputs[1], n.inputs[2], n.attrs
    local C, S = x.shape[2], dims_after(x.shape, 3)
    local ops = { { "x", e.val(x), "r" }, { "loss", e.val(n.out), "w" } }
    -- weighted (the CPU's k_cross_entropy_forward): w[y] on the target's term, w[c] on
    -- smoothing's, the mean over the summed w[y] of the entries not ignored
    local kind, body = class_weighted(e, n, "cross_entropy", ops, "double total = 0, count = 0;\n    " .. BLOCK .. [[ {
        const long long base = i / S * C * S + i % S;
        float mx = -__int_as_float(0x7f800000), se = 0;   // the CPU's log_softmax: float sums
        for (int c = 0; c < C; c++) { const float v = ld_x(base + c * S); if (v > mx) mx = v; }
        for (int c = 0; c < C; c++) se += so_exp_shifted(ld_x(base + c * S), mx);
        float sum = 0;
        for (int c = 0; c < C; c++) {
            const float lp = so_log_softmax(ld_x(base + c * S), mx, se);
            logp[base + c * S] = lp;
            sum += lp;
        }
        const long long y = target[i];
        float l = 0;
        if (y != ignore) {
            l = -(1 - eps) * logp[base + y * S];
            if (eps > 0) l -= eps / C * sum;
            count += 1;
        }
        if (reduction == 0) st_loss(i, l);
        total += l;
    }
    total = block_sum(total);
    count = block_sum(count);
    if (threadIdx.x == 0 && reduction != 0) st_loss(0, (float)(reduction == 1 ? total / count : total));]],
      { { "sum += lp;", "sum += ld_w(c) * lp;" }, { "l = -(1 - eps) * logp[", "l = -(1 - eps) * ld_w(y) * logp[" },
        { "count += 1;", "count += ld_w(y);" } })
    local k = e.kernel { kind = kind, ops = ops, body = body,
      params = "long long n, int C, long long S, const long long *target, float *logp, long long ignore, float eps, int reduction" }
    return e.launch(k, ops, { { "long long", by(e.batch(x), S) }, { "int", C }, { "long long", S },
      { "void *", e.val(t).ptr }, { "void *", e.save(n, "logp") }, { "long long", a.ignore_index }, { "float", e.lit(a.label_smoothing) },
      { "int", REDUCTION[a.reduction] } }, { blocks = 1 })
  end,
  backward = function(e, n)
    if n.inputs[2].dtype ~= "int64" then return ce_soft_backward(e, n) end
    local x, t, a = n.inputs[1], n.inputs[2], n.attrs
    local C, S = x.shape[2], dims_after(x.shape, 3)
    local ops = { { "dl", e.grad(n.out), "r" }, { "dx", e.grad(x), "a" } }
    -- weighted (the CPU's k_cross_entropy_weighted_backward): g (softmax a - q) with
    -- a = (1 - eps) w[y] + eps / C sum w and q = eps / C w[c] + (1 - eps) w[y] on y
    local kind, body = class_weighted(e, n, "cross_entropy_grad", ops,
      "double count = 0;\n    " .. BLOCK .. " count += target[i] != ignore;\n    count = block_sum(count);\n" ..
      "    const float g0 = reduction == 1 ? (float)(ld_dl(0) / count) : ld_dl(0);\n    " .. BLOCK .. [[ {
        long long b = i / S, s = i % S, y = target[i];
        if (y == ignore) continue;
        const float g = reduction == 0 ? ld_dl(i) : g0;
        for (int c = 0; c < C; c++) {
            long long j = (b * C + c) * S + s;
            acc_dx(j, so_ce_grad(g, logp[j], so_ce_q(c == y, eps, C)));
        }
    }]], { { "count += target[i] != ignore;", "if (target[i] != ignore) count += ld_w(target[i]);" },
           { "const float g0 =", "float wsum = 0;\n    for (int c = 0; c < C; c++) wsum += ld_w(c);\n    const float g0 =" },
           { "const float g = reduction == 0 ? ld_dl(i) : g0;",
             "const float g = reduction == 0 ? ld_dl(i) : g0, wt = (1 - eps) * ld_w(y), a = wt + eps / C * wsum;" },
           { "so_ce_grad(g, logp[j], so_ce_q(c == y, eps, C))", "so_ce_soft_grad(g, logp[j], a, eps / C * ld_w(c) + (c == y ? wt : 0))" } })
    local k = e.kernel { kind = kind, ops = ops, body = body,
      params = "long long n, int C, long long S, const long long *target, const float *logp, long long ignore, float eps, int reduction" }
    return e.launch(k, ops, { { "long long", by(e.batch(x), S) }, { "int", C }, { "long long", S },
      { "void *", e.val(t).ptr }, { "void *", e.save(n, "logp") }, { "long long", a.ignore_index }, { "float", e.lit(a.label_smoothing) },
      { "int", REDUCTION[a.reduction] } }, { blocks = 1 })
  end,
}

---------------------------------------------------------------------------
-- layer norm over the last D values of each row: one block per row (rows in parallel,
-- grid-strided), statistics in double as the CPU's; dweight and dbias in two steps,
-- 64 fixed chunks of rows summed per column, then the chunks in order (deterministic)

-- threads for a block that walks D values: a power of two in [32, 256]
local function block_threads(D)
  local t = 32
  while t < D and t < 256 do t = t * 2 end
  return t
end
local LN_CHUNKS = 64

-- The weight (and bias) gradients of a norm over the last D elements of each row
-- (LayerNorm, RMSNorm): a part kernel sums, per column, each of LN_CHUNKS chunks of the
-- rows (dw's `term` of row r, column col, given g = dy; db's g), in double, into scratch;
-- a second kernel adds the chunks in order (deterministic, no atomics).  `kind` names the
-- kernels; `with_bias`: the op's bias sums are made (LayerNorm's, even when db is not needed);
-- `stat_params` and `stats`: the saved row statistics `term` reads.
local function norm_param_grads(e, kind, dy, x, dw, db, D, rows, stat_params, stats, term, with_bias)
  local sums = with_bias and 2 or 1
  -- part (sums, CHUNKS, D) doubles: chunk c's sums over its rows
  local part = e.scratch(sums * LN_CHUNKS * D * 2, "f32")
  local ops = { { "dy", dy, "r" }, { "x", e.val(x), "r" } }
  local kp = e.kernel { kind = kind .. "_part", ops = ops,
    params = "long long n, long long rows, int D, " .. stat_params .. ", double *part",
    body = GRID .. [[ {
        const int c = (int)(i / D), col = (int)(i % D);
        const long long lo = rows * c / ]] .. LN_CHUNKS .. ", hi = rows * (c + 1) / " .. LN_CHUNKS .. [[;
        double sw = 0]] .. (with_bias and ", sb = 0" or "") .. [[;
        for (long long r = lo; r < hi; r++) {
            const float g = ld_dy(r * D + col);
            sw += ]] .. term .. [[;
]] .. (with_bias and "            sb += g;\n" or "") .. [[
        }
        part[i] = sw;
]] .. (with_bias and "        part[n + i] = sb;\n" or "") .. "    }" }
  local args = { { "long long", LN_CHUNKS * D }, { "long long", rows }, { "int", D } }
  for _, a in ipairs(stats) do args[#args + 1] = a end
  args[#args + 1] = { "void *", part.ptr }
  local lines = e.launch(kp, ops, args, { grid = LN_CHUNKS * D })
  local fops = {}
  if dw then fops[#fops + 1] = { "dw", dw, "a" } end
  if db then fops[#fops + 1] = { "db", db, "a" } end
  local body = { GRID .. " {", "        double sw = 0" .. (with_bias and ", sb = 0" or "") .. ";",
    "        for (int c = 0; c < " .. LN_CHUNKS .. "; c++) " .. (with_bias and
      ("{ sw += part[(long long)c * n + i]; sb += part[(long long)(" .. LN_CHUNKS .. " + c) * n + i]; }")
      or "sw += part[(long long)c * n + i];") }
  if dw then body[#body + 1] = "        acc_dw(i, (float)sw);" end
  if db then body[#body + 1] = "        acc_db(i, (float)sb);" end
  if not dw then body[#body + 1] = "        (void)sw;" end
  if with_bias and not db then body[#body + 1] = "        (void)sb;" end
  body[#body + 1] = "    }"
  local kf = e.kernel { kind = kind .. (with_bias and ((dw and "_dw" or "") .. (db and "_db" or "")) or ""), ops = fops,
    params = "long long n, const double *part", body = table.concat(body, "\n") }
  for _, l in ipairs(e.launch(kf, fops, { { "long long", D }, { "void *", part.ptr } }, { grid = D })) do lines[#lines + 1] = l end
  return lines
end

local function ln_layout(n)
  local x = n.inputs[1]
  local k = #n.attrs.normalized_shape
  return k, dims_after(x.shape, #x.shape - k + 1)
end

ops_cuda.layer_norm = {
  forward = function(e, n)
    local x, w, b = n.inputs[1], n.inputs[2], n.inputs[3]
    local k, D = ln_layout(n)
    local rows = e.rows(x, k)
    local ops = { { "x", e.val(x), "r" }, { "y", e.val(n.out), "w" } }
    if w then ops[#ops + 1] = { "wt", e.val(w), "r" } end
    if b then ops[#ops + 1] = { "bs", e.val(b), "r" } end
    local kern = e.kernel { kind = "layer_norm" .. (w and "_w" or "") .. (b and "_b" or ""), ops = ops,
      params = "long long rows, int D, float eps, float *save_mean, float *save_rstd",
      body = [[for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long base = r * D;
        double sum = 0, ss = 0;
        for (int i = threadIdx.x; i < D; i += blockDim.x) sum += ld_x(base + i);
        const double mean = block_sum(sum) / D;
        for (int i = threadIdx.x; i < D; i += blockDim.x) { double d = ld_x(base + i) - mean; ss += d * d; }
        ss = block_sum(ss);
        const float m = (float)mean, rstd = (float)(1.0 / sqrt(ss / D + eps));
        for (int i = threadIdx.x; i < D; i += blockDim.x)
            st_y(base + i, so_ln_apply(ld_x(base + i), m, rstd, ]] .. (w and "ld_wt(i)" or "1.0f") .. ", " ..
            (b and "ld_bs(i)" or "0.0f") .. [[));
        if (threadIdx.x == 0) { save_mean[r] = m; save_rstd[r] = rstd; }
    }]] }
    local T = block_threads(D)
    return e.launch(kern, ops, { { "long long", rows }, { "int", D }, { "float", e.lit(n.attrs.eps) },
      { "void *", e.save(n, "mean") }, { "void *", e.save(n, "rstd") } }, { grid = times(rows, T), threads = T })
  end,
  backward = function(e, n)
    local x, w, b = n.inputs[1], n.inputs[2], n.inputs[3]
    local k, D = ln_layout(n)
    local rows = e.rows(x, k)
    local dy, dx, dw, db = e.grad(n.out), e.grad(x), w and e.grad(w), b and e.grad(b)
    local stats = { { "void *", e.save(n, "mean") }, { "void *", e.save(n, "rstd") } }
    local lines = {}
    local function add(t) for _, l in ipairs(t) do lines[#lines + 1] = l end end
    if dx then
      local ops = { { "dy", dy, "r" }, { "x", e.val(x), "r" }, { "dx", dx, "a" } }
      if w then ops[#ops + 1] = { "wt", e.val(w), "r" } end
      local g = w and "ld_dy(base + i) * ld_wt(i)" or "ld_dy(base + i)"
      local kern = e.kernel { kind = "layer_norm_grad" .. (w and "_w" or ""), ops = ops,
        params = "long long rows, int D, const float *save_mean, const float *save_rstd",
        body = [[for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long base = r * D;
        const float m = save_mean[r], rstd = save_rstd[r];
        double s1 = 0, s2 = 0;
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            const float g = ]] .. g .. [[;
            s1 += g;
            s2 += so_ln_term(g, ld_x(base + i), m, rstd);
        }
        const float m1 = (float)(block_sum(s1) / D), m2 = (float)(block_sum(s2) / D);
        for (int i = threadIdx.x; i < D; i += blockDim.x)
            acc_dx(base + i, so_ln_grad(]] .. g .. [[, ld_x(base + i), m, rstd, m1, m2));
    }]] }
      local T = block_threads(D)
      add(e.launch(kern, ops, { { "long long", rows }, { "int", D }, stats[1], stats[2] },
        { grid = times(rows, T), threads = T }))
    end
    if dw or db then
      add(norm_param_grads(e, "layer_norm_grad_wb", dy, x, dw, db, D, rows, "const float *save_mean, const float *save_rstd",
        { stats[1], stats[2] }, "so_ln_term(g, ld_x(r * D + col), save_mean[r], save_rstd[r])", true))
    end
    return lines
  end,
}

---------------------------------------------------------------------------
-- embedding: forward gathers rows; backward, one block per weight row, each thread a
-- column, adds the gradients of the indices equal to that row in index order
-- (deterministic, no atomics; padding_idx gets none).  An index outside [0, V) reads
-- as NaN (the CPU program stops there; a kernel cannot).

ops_cuda.embedding = {
  forward = function(e, n)
    local idx, w = n.inputs[1], n.inputs[2]
    local V, D = w.shape[1], w.shape[2]
    local ops = { { "wt", e.val(w), "r" }, { "y", e.val(n.out), "w" } }
    local count = e.numel(n.out)
    return pointwise(e, "embedding", ops,
      "const long long v = idx[i / D];\n        st_y(i, v >= 0 && v < V ? ld_wt(v * D + i % D) : __int_as_float(0x7fc00000));",
      count, "const long long *idx, int V, int D", { { "void *", e.val(idx).ptr }, { "int", V }, { "int", D } })
  end,
  backward = function(e, n)
    local idx, w = n.inputs[1], n.inputs[2]
    local dw = e.grad(w)
    if not dw then return {} end
    local V, D = w.shape[1], w.shape[2]
    local ops = { { "dy", e.grad(n.out), "r" }, { "dw", dw, "a" } }
    local k = e.kernel { kind = "embedding_grad", ops = ops, params = "long long n, const long long *idx, int V, int D, long long padding_idx",
      body = [[for (long long v = blockIdx.x; v < V; v += gridDim.x) {
        if (v == padding_idx) continue;
        for (int c = threadIdx.x; c < D; c += blockDim.x) {
            float s = 0;
            int hit = 0;
            for (long long j = 0; j < n; j++)
                if (idx[j] == v) { s += ld_dy(j * D + c); hit = 1; }
            if (hit) acc_dw(v * D + c, s);
        }
    }]] }
    local T = block_threads(D)
    return e.launch(k, ops, { { "long long", e.numel(idx) }, { "void *", e.val(idx).ptr }, { "int", V }, { "int", D },
      { "long long", n.attrs.padding_idx or -1 } }, { grid = V * T, threads = T })
  end,
}

---------------------------------------------------------------------------
-- softmax / log_softmax over a dim of (OUTER, D, INNER): one thread per (outer, inner)
-- column, the CPU's loops over D (float sums, in its order)

local function softmax_layout(e, n)
  local d, D = require("ops").softmax.layout(n)
  return e.outer(n.inputs[1], d), D, dims_after(n.inputs[1].shape, d + 1)
end
local COLUMN = [[const long long base = i / INNER * D * INNER + i % INNER;
        float mx = -__int_as_float(0x7f800000);
        for (int d = 0; d < D; d++) { const float v = ld_x(base + d * INNER); if (v > mx) mx = v; }
        float s = 0;
        for (int d = 0; d < D; d++) s += so_exp_shifted(ld_x(base + d * INNER), mx);]]
for _, name in ipairs { "softmax", "log_softmax" } do
  local apply = name == "softmax" and [[
        const float inv = 1 / s;
        for (int d = 0; d < D; d++) st_y(base + d * INNER, so_exp_shifted(ld_x(base + d * INNER), mx) * inv);]] or [[
        for (int d = 0; d < D; d++) st_y(base + d * INNER, so_log_softmax(ld_x(base + d * INNER), mx, s));]]
  local grad = name == "softmax" and "ld_dy(base + d * INNER) * ld_y(base + d * INNER)" or "ld_dy(base + d * INNER)"
  ops_cuda[name] = {
    forward = function(e, n)
      local o, D, inner = softmax_layout(e, n)
      local count = times(o, inner)
      return pointwise(e, name, { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }, COLUMN .. apply, count,
        "int D, long long INNER", { { "int", D }, { "long long", inner } })
    end,
    backward = function(e, n)
      local o, D, inner = softmax_layout(e, n)
      local count = times(o, inner)
      local ops = { { "dy", e.grad(n.out), "r" }, { "y", e.val(n.out), "r" }, { "dx", e.grad(n.inputs[1]), "a" } }
      return pointwise(e, name .. "_grad", ops, [[const long long base = i / INNER * D * INNER + i % INNER;
        float s = 0;
        for (int d = 0; d < D; d++) s += ]] .. grad .. [[;
        for (int d = 0; d < D; d++) acc_dx(base + d * INNER, so_]] .. name .. [[_grad(ld_dy(base + d * INNER), ld_y(base + d * INNER), s));]],
        count, "int D, long long INNER", { { "int", D }, { "long long", inner } })
    end,
  }
end

---------------------------------------------------------------------------
-- data movement: permute (transpose is one), slice; each output element is one input
-- element, so the backward adds each gradient once (no atomics)

local MAXDIM = 6
local function norm(d, n) return d < 0 and d + n or d end

-- gather: out element i (out's shape `size`) reads input element sum_j digit_j * stride_j;
-- the dims are right-aligned in MAXDIM slots (size 1 before them), the loop unrolled so
-- that the sizes stay in registers
local function strided(e, kind, ops, body, count, size, stride)
  local params, args = {}, {}
  local pad = MAXDIM - #size
  for j = 1, MAXDIM do
    params[#params + 1] = string.format("long long s%d, long long t%d", j - 1, j - 1)
    args[#args + 1] = { "long long", size[j - pad] or 1 }
    args[#args + 1] = { "long long", stride[j - pad] or 0 }
  end
  local sizes, strides = {}, {}
  for j = 1, MAXDIM do sizes[j] = "s" .. (j - 1); strides[j] = "t" .. (j - 1) end
  local src = string.format([[const long long size[%d] = { %s }, stride[%d] = { %s };
        long long r = i, src = 0;
#pragma unroll
        for (int j = %d; j >= 0; j--) { src += r %% size[j] * stride[j]; r /= size[j]; }
        ]], MAXDIM, table.concat(sizes, ", "), MAXDIM, table.concat(strides, ", "), MAXDIM - 1)
  return pointwise(e, kind, ops, src .. body, count, table.concat(params, ", "), args)
end

-- the output's sizes and, per output dim, the input's stride (B stands for the batch)
local function permute_geometry(n, perm)
  local x = n.inputs[1]
  local st = {}
  for i = #x.shape, 1, -1 do st[i] = dims_after(x.shape, i + 1) end
  local size, stride = {}, {}
  for j, p in ipairs(perm) do
    size[j] = x.shape[p + 1] == "B" and "B" or x.shape[p + 1]
    stride[j] = st[p + 1]
  end
  return size, stride
end
local function permute_rule(perm_of)
  return {
    forward = function(e, n)
      local size, stride = permute_geometry(n, perm_of(n))
      return strided(e, "permute", { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }, "st_y(i, ld_x(src));",
        e.numel(n.out), size, stride)
    end,
    backward = function(e, n)
      local dx = e.grad(n.inputs[1])
      if not dx then return {} end
      local size, stride = permute_geometry(n, perm_of(n))
      return strided(e, "permute_grad", { { "dy", e.grad(n.out), "r" }, { "dx", dx, "a" } }, "acc_dx(src, ld_dy(i));",
        e.numel(n.out), size, stride)
    end,
  }
end
ops_cuda.transpose = permute_rule(require("ops").transpose.perm)
ops_cuda.permute = permute_rule(require("ops").permute.perm)

-- slice with step: out (OUTER, LEN, INNER) = x (OUTER, D, INNER)[:, start::step][:LEN]
local SLICE = [[const long long o = i / ((long long)LEN * INNER), j = i / INNER % LEN, in = i % INNER;
        const long long src = (o * D + start + j * step) * INNER + in;
        ]]
local function slice_args(e, n)
  local x = n.inputs[1]
  local d = norm(n.attrs.dim, #x.shape) + 1
  return { { "int", x.shape[d] }, { "long long", dims_after(x.shape, d + 1) }, { "int", n.attrs.start_index },
    { "int", n.attrs.step }, { "int", n.out.shape[d] } }
end
ops_cuda.slice = {
  forward = function(e, n)
    return pointwise(e, "slice", { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }, SLICE .. "st_y(i, ld_x(src));",
      e.numel(n.out), "int D, long long INNER, int start, int step, int LEN", slice_args(e, n))
  end,
  backward = function(e, n)
    local dx = e.grad(n.inputs[1])
    if not dx then return {} end
    return pointwise(e, "slice_grad", { { "dy", e.grad(n.out), "r" }, { "dx", dx, "a" } }, SLICE .. "acc_dx(src, ld_dy(i));",
      e.numel(n.out), "int D, long long INNER, int start, int step, int LEN", slice_args(e, n))
  end,
}

---------------------------------------------------------------------------
-- sum / mean over one run of adjacent dims, (OUTER, D, INNER) -> (OUTER, INNER): one
-- thread per output, the CPU's k_reduce_rows order (INNER = 1: k_sum8's eight double
-- accumulators; else a float sum over D)

local function reduce_layout(e, n)
  local first, D = require("ops").sum.layout(n)
  if not first then return 1, e.numel(n.inputs[1]), 1 end
  local x = n.inputs[1]
  -- (the reduced dims hold no B: ops.lua refuses that; INNER may name it)
  local last = 0
  for _, d in ipairs(n.attrs.dims) do last = math.max(last, norm(d, #x.shape) + 1) end
  return e.outer(x, first), D, dims_after(x.shape, last + 1)
end
for _, name in ipairs { "sum", "mean" } do
  ops_cuda[name] = {
    forward = function(e, n)
      local o, D, inner = reduce_layout(e, n)
      local count = times(o, inner)
      return pointwise(e, "reduce_rows", { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }, [[const long long o = i / INNER, in = i % INNER;
        if (INNER == 1) {
            double acc[8] = { 0, 0, 0, 0, 0, 0, 0, 0 }, s = 0;
            const long long n8 = D & ~7LL, base = o * D;
            for (long long d = 0; d < n8; d += 8) for (int j = 0; j < 8; j++) acc[j] += ld_x(base + d + j);
            for (long long d = n8; d < D; d++) s += ld_x(base + d);
            for (int j = 0; j < 8; j++) s += acc[j];
            st_y(i, (float)(s * scale));
        } else {
            float s = 0;
            for (long long d = 0; d < D; d++) s += ld_x((o * D + d) * INNER + in);
            st_y(i, s * scale);
        }]], count, "long long D, long long INNER, float scale",
        { { "long long", D }, { "long long", inner }, { "float", name == "mean" and string.format("(1.0f / (float)(%s))", D) or "1.0f" } })
    end,
    backward = function(e, n)
      local o, D, inner = reduce_layout(e, n)
      local dx = e.grad(n.inputs[1])
      if not dx then return {} end
      return pointwise(e, "expand_rows", { { "dy", e.grad(n.out), "r" }, { "dx", dx, "a" } },
        "acc_dx(i, ld_dy(i / (D * INNER) * INNER + i % INNER) * scale);", e.numel(n.inputs[1]), "long long D, long long INNER, float scale",
        { { "long long", D }, { "long long", inner }, { "float", name == "mean" and string.format("(1.0f / (float)(%s))", D) or "1.0f" } })
    end,
  }
end

-- amax (max over a run of dims, or everything): one thread per output, the CPU's
-- k_amax_forward order (a NaN wins); its backward splits dy evenly among the ties, as
-- PyTorch's (and k_amax_backward)
ops_cuda.amax = {
  forward = function(e, n)
    local o, D, inner = reduce_layout(e, n)
    return pointwise(e, "amax", { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }, [[const long long o = i / INNER, in = i % INNER;
        float m = ld_x(o * D * INNER + in);
        for (long long d = 1; d < D; d++) {
            const float v = ld_x((o * D + d) * INNER + in);
            if (v > m || v != v) m = v;
        }
        st_y(i, m);]], times(o, inner), "long long D, long long INNER", { { "long long", D }, { "long long", inner } })
  end,
  backward = function(e, n)
    local o, D, inner = reduce_layout(e, n)
    local dx = e.grad(n.inputs[1])
    if not dx then return {} end
    return pointwise(e, "amax_grad", { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "r" }, { "dy", e.grad(n.out), "r" }, { "dx", dx, "a" } },
      [[const long long o = i / INNER, in = i % INNER;
        const float m = ld_y(i);
        int ties = 0;
        for (long long d = 0; d < D; d++) ties += ld_x((o * D + d) * INNER + in) == m;
        if (ties == 0) continue;
        const float g = ld_dy(i) / (float)ties;
        for (long long d = 0; d < D; d++) if (ld_x((o * D + d) * INNER + in) == m) acc_dx((o * D + d) * INNER + in, g);]],
      times(o, inner), "long long D, long long INNER", { { "long long", D }, { "long long", inner } })
  end,
}

-- max over a dim (values; the index of the first maximum saved in training, as the
-- CPU's k_max_dim_*): the gradient goes to that index, one output each (no atomics)
ops_cuda.max_dim = {
  forward = function(e, n)
    local o, D, inner = reduce_layout(e, n)
    return pointwise(e, "max_dim", { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }, [[const long long o = i / INNER, in = i % INNER;
        int best = 0;
        float m = ld_x(o * D * INNER + in);
        for (long long d = 1; d < D; d++) {
            const float v = ld_x((o * D + d) * INNER + in);
            if (v > m) { m = v; best = (int)d; }
        }
        st_y(i, m);
        if (index) index[i] = best;]], times(o, inner), "long long D, long long INNER, int *index",
      { { "long long", D }, { "long long", inner }, { "void *", "training ? " .. e.save(n, "index") .. " : NULL" } })
  end,
  backward = function(e, n)
    local o, D, inner = reduce_layout(e, n)
    local dx = e.grad(n.inputs[1])
    if not dx then return {} end
    return pointwise(e, "max_dim_grad", { { "dy", e.grad(n.out), "r" }, { "dx", dx, "a" } },
      "acc_dx((i / INNER * D + index[i]) * INNER + i % INNER, ld_dy(i));", times(o, inner), "long long D, long long INNER, const int *index",
      { { "long long", D }, { "long long", inner }, { "void *", e.save(n, "index") } })
  end,
}

-- var / std over a dim (correction), the CPU's k_var_impl_*: the mean and the sum of
-- squared deviations in double, rounded to float as the CPU's; the backward recomputes
-- the mean (g (x - mean) · 2 / (D - c), or / (D - c) / std)
local VAR_ROW = [[const long long o = i / INNER, in = i % INNER;
        double s = 0, ss = 0;
        for (long long d = 0; d < D; d++) s += ld_x((o * D + d) * INNER + in);
        const double mean = s / D;
        for (long long d = 0; d < D; d++) { const double v = ld_x((o * D + d) * INNER + in) - mean; ss += v * v; }
        ]]
for _, name in ipairs { "var", "std" } do
  local root = name == "std"
  ops_cuda[name] = {
    forward = function(e, n)
      local o, D, inner = reduce_layout(e, n)
      return pointwise(e, name, { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }, VAR_ROW ..
        "const float v = (float)ss / ((float)D - c);\n        st_y(i, " .. (root and "sqrtf(v)" or "v") .. ");",
        times(o, inner), "long long D, long long INNER, float c",
        { { "long long", D }, { "long long", inner }, { "float", host_literal(n.attrs.correction) } })
    end,
    backward = function(e, n)
      local o, D, inner = reduce_layout(e, n)
      local dx = e.grad(n.inputs[1])
      if not dx then return {} end
      local ops = { { "x", e.val(n.inputs[1]), "r" }, { "dy", e.grad(n.out), "r" }, { "dx", dx, "a" } }
      if root then ops[#ops + 1] = { "y", e.val(n.out), "r" } end
      return pointwise(e, name .. "_grad", ops, VAR_ROW .. "(void)ss;\n        float g = ld_dy(i) / ((float)D - c);\n        g = " ..
        (root and "g / ld_y(i)" or "2 * g") .. [[;
        const float m = (float)mean;
        for (long long d = 0; d < D; d++) acc_dx((o * D + d) * INNER + in, g * (ld_x((o * D + d) * INNER + in) - m));]],
        times(o, inner), "long long D, long long INNER, float c",
        { { "long long", D }, { "long long", inner }, { "float", host_literal(n.attrs.correction) } })
    end,
  }
end

-- cosine_similarity over its dim, (OUTER, D, INNER), the CPU's k_cosine_similarity_*
-- (float sums, the norm product clamped at eps²): one thread per output
local COS_ROW = [[const long long o = i / INNER, in = i % INNER;
        float w12 = 0, w1 = 0, w2 = 0;
        for (long long d = 0; d < D; d++) {
            const float p = ld_a((o * D + d) * INNER + in), q = ld_b((o * D + d) * INNER + in);
            w12 += p * q; w1 += p * p; w2 += q * q;
        }
        float n2 = w1 * w2;
        const int clamped = n2 < eps * eps;
        if (clamped) n2 = eps * eps;
        ]]
local function cos_args(e, n)
  local first, D, inner = require("ops").cosine_similarity.layout(n)
  return times(e.outer(n.inputs[1], first), inner), { { "long long", D }, { "long long", inner }, { "float", host_literal(n.attrs.eps) } }
end
ops_cuda.cosine_similarity = {
  forward = function(e, n)
    local count, args = cos_args(e, n)
    return pointwise(e, "cosine_similarity", { { "a", e.val(n.inputs[1]), "r" }, { "b", e.val(n.inputs[2]), "r" }, { "y", e.val(n.out), "w" } },
      COS_ROW .. "(void)clamped;\n        st_y(i, w12 / sqrtf(n2));", count, "long long D, long long INNER, float eps", args)
  end,
  backward = function(e, n)
    local count, args = cos_args(e, n)
    local lines = {}
    for k, side in ipairs { { "a", "q / nn - (clamped ? 0 : c * p / w1)" }, { "b", "p / nn - (clamped ? 0 : c * q / w2)" } } do
      local dt = e.grad(n.inputs[k])
      if dt then
        local ops = { { "a", e.val(n.inputs[1]), "r" }, { "b", e.val(n.inputs[2]), "r" }, { "dy", e.grad(n.out), "r" }, { "dt", dt, "a" } }
        for _, l in ipairs(pointwise(e, "cosine_similarity_grad_" .. side[1], ops, COS_ROW .. [[const float nn = sqrtf(n2), g = ld_dy(i), c = w12 / nn;
        for (long long d = 0; d < D; d++) {
            const long long j = (o * D + d) * INNER + in;
            const float p = ld_a(j), q = ld_b(j);
            acc_dt(j, g * (]] .. side[2] .. [[));
        }]], count, "long long D, long long INNER, float eps", args)) do lines[#lines + 1] = l end
      end
    end
    return lines
  end,
}

---------------------------------------------------------------------------
-- accuracy (a train.log metric, no gradient): one block scores the batch, as the CPU's
-- k_accuracy_forward: class indices against each row's argmax, or a float target against
-- x > threshold elementwise; the share right, in double, rounded once
ops_cuda.accuracy = {
  forward = function(e, n)
    local x, t = n.inputs[1], n.inputs[2]
    local C = #x.shape >= 2 and dims_after(x.shape, 2) or 1
    local finish = "right = block_sum(right);\n    if (threadIdx.x == 0) st_y(0, n > 0 ? (float)(right / (double)n) : 0.0f);"
    if t.dtype == "int64" then
      local ops = { { "x", e.val(x), "r" }, { "y", e.val(n.out), "w" } }
      local k = e.kernel { kind = "accuracy_argmax", ops = ops, params = "long long n, long long C, const long long *target",
        body = "double right = 0;\n    " .. BLOCK .. [[ {
        long long best = 0;
        float bv = ld_x(i * C);
        for (long long c = 1; c < C; c++) {
            const float v = ld_x(i * C + c);
            if (so_argmax_takes(v, bv)) { best = c; bv = v; }
        }
        right += best == target[i];
    }
    ]] .. finish }
      return e.launch(k, ops, { { "long long", e.batch(x) }, { "long long", C }, { "void *", e.val(t).ptr } }, { blocks = 1 })
    end
    local ops = { { "x", e.val(x), "r" }, { "t", e.val(t), "r" }, { "y", e.val(n.out), "w" } }
    local k = e.kernel { kind = "accuracy_threshold", ops = ops, params = "long long n, float threshold",
      body = "double right = 0;\n    " .. BLOCK .. " right += so_threshold_right(ld_x(i), threshold, ld_t(i));\n    " .. finish }
    return e.launch(k, ops, { { "long long", by(e.batch(x), C) }, { "float", e.lit(n.attrs.threshold) } }, { blocks = 1 })
  end,
}

---------------------------------------------------------------------------
-- matmul (torch.matmul): cuBLASLt strided batches over the output's batch dims.  An
-- operand laid out like the output's batch (dense) or one matrix for every batch
-- (shared) is a stride of M·K (K·N) or 0; any other broadcast is first expanded into
-- scratch.  A dense a with a shared b (x @ W) is one GEMM over all rows, as on the CPU.
-- The gradient of a shared or broadcast operand is computed per batch into scratch and
-- summed over the batches that read each matrix, in batch order (deterministic).

-- the product of a matmul's batch dims (a Size: gen/operands.lua)
local prod = operands.batches
-- how operand `s` (its strides) spans the batch: "dense", "shared" or "broadcast"
local function batch_kind(l, s)
  local shared, dense, run = true, true, 1
  for i = l.nb, 1, -1 do
    if l.bshape[i] ~= 1 then
      if s[i] ~= 0 then shared = false end
      if s[i] ~= run then dense = false end
      run = run * (l.bshape[i] == "B" and 1 or l.bshape[i])
    end
  end
  return shared and "shared" or dense and "dense" or "broadcast"
end
-- kernel arguments: the batch shape and an operand's strides, right-aligned in 4 dims
local function index_args(l, s)
  local args = {}
  local pad = 4 - l.nb
  for i = 1, 4 do args[#args + 1] = { "long long", l.bshape[i - pad] or 1 } end
  for i = 1, 4 do args[#args + 1] = { "long long", s[i - pad] or 0 } end
  return args
end
local INDEX_PARAMS = "long long b0, long long b1, long long b2, long long b3, long long s0, long long s1, long long s2, long long s3"
-- mat: the operand's matrix read by batch bi
local INDEX = [[const long long bs[4] = { b0, b1, b2, b3 }, ss[4] = { s0, s1, s2, s3 };
        long long r = bi, mat = 0;
#pragma unroll
        for (int j = 3; j >= 0; j--) { mat += r % bs[j] * ss[j]; r /= bs[j]; }
        ]]

-- a matrix dim as a size (B: a Size; a tensor whose batch dimension is not first)
local function msize(v) return v == "B" and dims_after({ "B" }, 1) or v end
-- a size's elements at the largest batch
local function at_max(e, v) return math.type(v) == "integer" and v or v:at(e.count_max({ "B" })) end
-- the operand expanded to one matrix per batch (nbat, size) in scratch, in format `fmt`
local function expand(e, l, s, x, size, nbat, lines)
  local out = e.scratch(e.count_max(l.bshape) * at_max(e, size), x.V)
  local ops = { { "x", x, "r" }, { "y", out, "w" } }
  local args = { { "long long", times(nbat, size) }, { "long long", size } }
  for _, a in ipairs(index_args(l, s)) do args[#args + 1] = a end
  for _, ln in ipairs(pointwise(e, "matmul_expand", ops, "const long long bi = i / size, el = i % size;\n        " .. INDEX ..
      "st_y(i, ld_x(mat * size + el));", args[1][2], "long long size, " .. INDEX_PARAMS, { table.unpack(args, 2) })) do
    lines[#lines + 1] = ln
  end
  return out
end
-- grad (count elements, `size` per matrix) += the sum over the batches bi that read
-- matrix m of per (nbat, size)
local function reduce_batches(e, l, s, per, grad, count, size, nbat, lines)
  local ops = { { "per", per, "r" }, { "dx", grad, "a" } }
  local args = { { "long long", size }, { "long long", nbat } }
  for _, a in ipairs(index_args(l, s)) do args[#args + 1] = a end
  for _, ln in ipairs(pointwise(e, "matmul_reduce", ops, "const long long m = i / size, el = i % size;\n" ..
      "        float t = 0;\n        for (long long bi = 0; bi < nbat; bi++) {\n        " .. INDEX ..
      "if (mat == m) t += ld_per(bi * size + el);\n        }\n        acc_dx(i, t);", count,
      "long long size, long long nbat, " .. INDEX_PARAMS, args)) do
    lines[#lines + 1] = ln
  end
end

ops_cuda.matmul = {
  forward = function(e, n)
    local l = require("ops").matmul.layout(n)
    local a, b = n.inputs[1], n.inputs[2]
    local M, K, N = msize(l.M), msize(l.K), msize(l.N)
    local nbat = prod(l.bshape)
    local ka, kb = batch_kind(l, l.sa), batch_kind(l, l.sb)
    if ka == "dense" and kb == "shared" then
      return e.gemm { what = "matmul", ta = 0, tb = 0, M = times(nbat, M), N = N, K = K,
                      A = e.val(a), B = e.val(b), C = e.val(n.out) }
    end
    local lines = {}
    local A, B = e.val(a), e.val(b)
    local nA, nB = e.numel(a), e.numel(b)
    if ka == "broadcast" then A = expand(e, l, l.sa, A, mul(M, K), nbat, lines); ka = "dense"; nA = times(nbat, mul(M, K)) end
    if kb == "broadcast" then B = expand(e, l, l.sb, B, mul(K, N), nbat, lines); kb = "dense"; nB = times(nbat, mul(K, N)) end
    for _, ln in ipairs(e.gemm { what = "matmul", ta = 0, tb = 0, M = M, N = N, K = K, A = A, B = B, C = e.val(n.out),
        batch = nbat, sA = ka == "dense" and mul(M, K) or 0, sB = kb == "dense" and mul(K, N) or 0, sC = mul(M, N),
        nA = nA, nB = nB, nC = e.numel(n.out) }) do lines[#lines + 1] = ln end
    return lines
  end,
  backward = function(e, n)
    local l = require("ops").matmul.layout(n)
    local a, b = n.inputs[1], n.inputs[2]
    local M, K, N = msize(l.M), msize(l.K), msize(l.N)
    local nbat = prod(l.bshape)
    local ka, kb = batch_kind(l, l.sa), batch_kind(l, l.sb)
    local dy, da, db = e.grad(n.out), e.grad(a), e.grad(b)
    local lines = {}
    local function add(t) for _, ln in ipairs(t) do lines[#lines + 1] = ln end end
    if ka == "dense" and kb == "shared" then
      local R = times(nbat, M)
      if da then add(e.gemm { what = "matmul da", ta = 0, tb = 1, M = R, N = K, K = N, A = dy, B = e.val(b), C = da, accumulate = true }) end
      if db then add(e.gemm { what = "matmul db", ta = 1, tb = 0, M = K, N = N, K = R, A = e.val(a), B = dy, C = db, accumulate = true }) end
      return lines
    end
    local A, B = e.val(a), e.val(b)
    local nA, nB = e.numel(a), e.numel(b)
    local sa = ka == "dense" and mul(M, K) or 0
    local sb = kb == "dense" and mul(K, N) or 0
    local dyn = e.numel(n.out)
    -- the gradient of one operand: straight into it when dense, else per batch and summed
    local function grad_of(kind, s, grad, count, size, q)
      q.batch, q.nC, q.sC = nbat, times(nbat, size), size
      if kind == "dense" then
        q.C, q.accumulate = grad, true
        add(e.gemm(q))
        return
      end
      local per = e.scratch(e.count_max(l.bshape) * at_max(e, size), "f32")
      q.C = per
      add(e.gemm(q))
      reduce_batches(e, l, s, per, grad, count, size, nbat, lines)
    end
    if da then   -- da[bi] (M, K) += dy[bi] (M, N) · b[bi]ᵀ
      local Bx, nBx, sbx = B, nB, sb
      if kb == "broadcast" then Bx = expand(e, l, l.sb, B, mul(K, N), nbat, lines); nBx = times(nbat, mul(K, N)); sbx = mul(K, N) end
      grad_of(ka, l.sa, da, e.numel(a), mul(M, K), { what = "matmul da", ta = 0, tb = 1, M = M, N = K, K = N, A = dy, B = Bx,
        sA = mul(M, N), sB = sbx, nA = dyn, nB = nBx })
    end
    if db then   -- db[bi] (K, N) += a[bi]ᵀ (K, M) · dy[bi] (M, N)
      local Ax, nAx, sax = A, nA, sa
      if ka == "broadcast" then Ax = expand(e, l, l.sa, A, mul(M, K), nbat, lines); nAx = times(nbat, mul(M, K)); sax = mul(M, K) end
      grad_of(kb, l.sb, db, e.numel(b), mul(K, N), { what = "matmul db", ta = 1, tb = 0, M = K, N = N, K = M, A = Ax, B = dy,
        sA = sax, sB = mul(M, N), nA = nAx, nB = dyn })
    end
    return lines
  end,
}

---------------------------------------------------------------------------
-- scaled_dot_product_attention, B = the batch dims' product (batch · heads), as the CPU:
--   att (B, L, S) = softmax(scale · q kᵀ, causal: query i sees keys 0..i), saved in f32
--   out (B, L, EV) = att v
-- three strided-batch GEMMs forward (the softmax in between, one thread per row, the
-- CPU's loop), and backward dv += attᵀ dO, dP = dO vᵀ, dZ = att (dP - rowsum(dP att)),
-- dq += scale dZ k, dk += scale dZᵀ q.

local function sdpa_sizes(e, n)
  local q, k, v = n.inputs[1].shape, n.inputs[2].shape, n.inputs[3].shape
  local r = #q
  return e.outer(n.inputs[1], r - 1), q[r - 1], k[r - 1], q[r], v[r]
end

local sdpa_gemms = {
  forward = function(e, n)
    local q, k, v = n.inputs[1], n.inputs[2], n.inputs[3]
    local B, L, S, E, EV = sdpa_sizes(e, n)
    local scale = n.attrs.scale or 1 / math.sqrt(E)
    local att = { ptr = e.save(n, "att"), S = "f32", V = "f32", n = e.count_max(q.shape, 1, #q.shape - 2) * L * S }
    local natt = times(B, L * S)
    local lines = {}
    local function add(t) for _, ln in ipairs(t) do lines[#lines + 1] = ln end end
    add(e.gemm { what = "attention q kT", ta = 0, tb = 1, M = L, N = S, K = E, A = e.val(q), B = e.val(k), C = att, alpha = scale,
                 batch = B, sA = L * E, sB = S * E, sC = L * S, nA = e.numel(q), nB = e.numel(k), nC = natt })
    local kern = e.kernel { kind = "attention_softmax", ops = {}, params = "float *__restrict__ att, long long n, int L, int S, int causal",
      body = GRID .. [[ {
        float *r = att + i * S;
        const int row = (int)(i % L), vis = causal ? (row + 1 < S ? row + 1 : S) : S;   // keys query `row` sees
        float mx = -__int_as_float(0x7f800000), s = 0;
        for (int j = 0; j < vis; j++) if (r[j] > mx) mx = r[j];
        for (int j = 0; j < vis; j++) { r[j] = so_exp_shifted(r[j], mx); s += r[j]; }
        const float inv = 1 / s;
        for (int j = 0; j < vis; j++) r[j] *= inv;
        for (int j = vis; j < S; j++) r[j] = 0;
    }]] }
    local rows = times(B, L)
    add(e.launch(kern, {}, { { "void *", att.ptr }, { "long long", rows }, { "int", L }, { "int", S }, { "int", n.attrs.is_causal and 1 or 0 } },
      { grid = rows }))
    add(e.gemm { what = "attention att v", ta = 0, tb = 0, M = L, N = EV, K = S, A = att, B = e.val(v), C = e.val(n.out),
                 batch = B, sA = L * S, sB = S * EV, sC = L * EV, nA = natt, nB = e.numel(v), nC = e.numel(n.out) })
    return lines
  end,
  backward = function(e, n)
    local q, k, v = n.inputs[1], n.inputs[2], n.inputs[3]
    local B, L, S, E, EV = sdpa_sizes(e, n)
    local scale = n.attrs.scale or 1 / math.sqrt(E)
    local att = { ptr = e.save(n, "att"), S = "f32", V = "f32", n = e.count_max(q.shape, 1, #q.shape - 2) * L * S }
    local natt = times(B, L * S)
    local dout = e.grad(n.out)
    local dq, dk, dv = e.grad(q), e.grad(k), e.grad(v)
    local lines = {}
    local function add(t) for _, ln in ipairs(t) do lines[#lines + 1] = ln end end
    if dv then
      add(e.gemm { what = "attention dv", ta = 1, tb = 0, M = S, N = EV, K = L, A = att, B = dout, C = dv, accumulate = true,
                   batch = B, sA = L * S, sB = L * EV, sC = S * EV, nA = natt, nB = e.numel(n.out), nC = e.numel(v) })
    end
    if not dq and not dk then return lines end
    local dp = e.scratch(att.n, "f32")
    add(e.gemm { what = "attention dP", ta = 0, tb = 1, M = L, N = S, K = EV, A = dout, B = e.val(v), C = dp,
                 batch = B, sA = L * EV, sB = S * EV, sC = L * S, nA = e.numel(n.out), nB = e.numel(v), nC = natt })
    local kern = e.kernel { kind = "attention_softmax_grad", ops = {},
      params = "float *__restrict__ dp, const float *__restrict__ att, long long n, int S",
      body = GRID .. [[ {
        float *g = dp + i * S;
        const float *p = att + i * S;
        float s = 0;
        for (int j = 0; j < S; j++) s += g[j] * p[j];
        for (int j = 0; j < S; j++) g[j] = so_softmax_grad(g[j], p[j], s);
    }]] }
    local rows = times(B, L)
    add(e.launch(kern, {}, { { "void *", dp.ptr }, { "void *", att.ptr }, { "long long", rows }, { "int", S } }, { grid = rows }))
    if dq then
      add(e.gemm { what = "attention dq", ta = 0, tb = 0, M = L, N = E, K = S, A = dp, B = e.val(k), C = dq, accumulate = true, alpha = scale,
                   batch = B, sA = L * S, sB = S * E, sC = L * E, nA = natt, nB = e.numel(k), nC = e.numel(q) })
    end
    if dk then
      add(e.gemm { what = "attention dk", ta = 1, tb = 0, M = S, N = E, K = L, A = dp, B = e.val(q), C = dk, accumulate = true, alpha = scale,
                   batch = B, sA = L * S, sB = L * E, sC = S * E, nA = natt, nB = e.numel(q), nC = e.numel(k) })
    end
    return lines
  end,
}

-- The fused path (gen/ops.lua's `fused`: head dims ≤ 128, unless --gemm-attention; flash attention's scheme in
-- fp32 on CUDA cores): a block of 8 warps takes 8 query rows of one (batch · head), a
-- warp one row, and walks the keys in tiles of 32 staged in shared memory (each lane one
-- key's score; each lane holds ⌈dim/32⌉ of the row's output dims).  Forward: the online
-- softmax (running max m and sum l, the output rescaled as m grows), out = acc / l, and
-- lse = m + log l saved per row.  Backward, without atomics: D = rowsum(P ∘ dP), then dq
-- (a warp per query row, two passes over the key tiles), then dk and dv (a warp per key
-- row over query tiles), each recomputing p = exp(scale q·k - lse) and dS = p (dO·v - D).  Causal:
-- query i sees keys 0..i (the CPU's rule; tiles past a block's last row are skipped).
-- Loads and stores through the operands' accessors (bf16/fp16/f32 storage).
local FLASH_ROWS, FLASH_TILE = 8, 32   -- rows per block (a warp each), keys or queries per tile
local FLASH_PRELUDE = [[
    const unsigned FULL = 0xffffffffu;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int nrt = (RL + FA_ROWS - 1) / FA_ROWS;   // row tiles per (batch · head)
    const long long bh = blockIdx.x / nrt;
    const int r0 = (int)(blockIdx.x % nrt) * FA_ROWS, row = r0 + w;   // this warp's row
    const bool live = row < RL;   // (warp-uniform)]]
-- the #defines of one kernel: sizes and which gradients it accumulates
local function flash_defs(E, EV, causal, rows_len, extra)
  local dt = (math.max(E, EV) + 31) // 32
  local t = { string.format("#define FA_E %d", E), string.format("#define FA_EV %d", EV), string.format("#define FA_DT %d   // dims per lane", dt),
    string.format("#define FA_CAUSAL %d", causal and 1 or 0), string.format("#define FA_ROWS %d", FLASH_ROWS),
    string.format("#define FA_TILE %d", FLASH_TILE), string.format("#define RL %s   // the rows a block's warps own", rows_len),
    "#define NEG_INF (-__int_as_float(0x7f800000))",
    "__device__ __forceinline__ float fa_max(float v) { for (int o = 16; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o)); return v; }",
    "__device__ __forceinline__ float fa_sum(float v) { for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o); return v; }" }
  for _, x in ipairs(extra or {}) do t[#t + 1] = x end
  return t
end

local function flash_kind(what, E, EV, causal) return string.format("flash_%s_e%d_v%d%s", what, E, EV, causal and "_causal" or "") end

local function flash_forward(e, n)
  local q, k, v = n.inputs[1], n.inputs[2], n.inputs[3]
  local B, L, S, E, EV = sdpa_sizes(e, n)
  local scale = n.attrs.scale or 1 / math.sqrt(E)
  local causal = n.attrs.is_causal and true or false
  local ops = { { "q", e.val(q), "r" }, { "k", e.val(k), "r" }, { "v", e.val(v), "r" }, { "out", e.val(n.out), "w" } }
  local kern = e.kernel { kind = flash_kind("fwd", E, EV, causal), ops = ops, globals = flash_defs(E, EV, causal, "L"),
    params = "float *__restrict__ lse, int L, int S, float scale",
    body = FLASH_PRELUDE .. [[

    __shared__ float sq[FA_ROWS * FA_E], sk[FA_TILE * (FA_E + 1)], sv[FA_TILE * FA_EV];   // (sk padded: a lane a key)
    const long long qb = bh * L * FA_E, kb = bh * S * FA_E, vb = bh * S * FA_EV;
    for (int x = threadIdx.x; x < FA_ROWS * FA_E; x += blockDim.x) sq[x] = r0 * FA_E + x < L * FA_E ? ld_q(qb + (long long)r0 * FA_E + x) : 0.0f;
    float m = NEG_INF, l = 0, acc[FA_DT];
    for (int u = 0; u < FA_DT; u++) acc[u] = 0;
    const int kend = FA_CAUSAL && r0 + FA_ROWS < S ? r0 + FA_ROWS : S;   // the keys this block's rows see
    for (int k0 = 0; k0 < kend; k0 += FA_TILE) {
        __syncthreads();   // the last tile's readers are done
        for (int x = threadIdx.x; x < FA_TILE * FA_E; x += blockDim.x) {
            const int t = x / FA_E, d = x % FA_E;
            sk[t * (FA_E + 1) + d] = k0 + t < S ? ld_k(kb + (long long)(k0 + t) * FA_E + d) : 0.0f;
        }
        for (int x = threadIdx.x; x < FA_TILE * FA_EV; x += blockDim.x)
            sv[x] = k0 + x / FA_EV < S ? ld_v(vb + (long long)k0 * FA_EV + x) : 0.0f;
        __syncthreads();
        if (!live) continue;
        const int j = k0 + lane;   // this lane's key
        float s = NEG_INF;
        if (j < S && (!FA_CAUSAL || j <= row)) {
            float dot = 0;
            for (int d = 0; d < FA_E; d++) dot += sq[w * FA_E + d] * sk[lane * (FA_E + 1) + d];
            s = dot * scale;
        }
        const float mn = fmaxf(m, fa_max(s));   // finite: every row sees key 0 in the first tile
        const float p = s == NEG_INF ? 0.0f : so_exp_shifted(s, mn), alpha = so_exp_shifted(m, mn);
        l = l * alpha + fa_sum(p);
        for (int u = 0; u < FA_DT; u++) acc[u] *= alpha;
        for (int t = 0; t < FA_TILE; t++) {
            const float pt = __shfl_sync(FULL, p, t);
            for (int u = 0; u < FA_DT; u++) {
                const int d = lane + 32 * u;
                if (d < FA_EV) acc[u] += pt * sv[t * FA_EV + d];
            }
        }
        m = mn;
    }
    if (!live) return;
    const float inv = 1 / l;
    for (int u = 0; u < FA_DT; u++) {
        const int d = lane + 32 * u;
        if (d < FA_EV) st_out((bh * L + row) * FA_EV + d, acc[u] * inv);
    }
    if (lane == 0) lse[bh * L + row] = m + logf(l);]] }
  return e.launch(kern, ops, { { "void *", e.save(n, "lse") }, { "int", L }, { "int", S }, { "float", e.lit(scale) } },
    { blocks = times(B, (L + FLASH_ROWS - 1) // FLASH_ROWS) })
end

local function flash_backward(e, n)
  local q, k, v = n.inputs[1], n.inputs[2], n.inputs[3]
  local B, L, S, E, EV = sdpa_sizes(e, n)
  local scale = n.attrs.scale or 1 / math.sqrt(E)
  local causal = n.attrs.is_causal and true or false
  local dq, dk, dv = e.grad(q), e.grad(k), e.grad(v)
  local lines = {}
  local function add(t) for _, ln in ipairs(t) do lines[#lines + 1] = ln end end
  if not dq and not dk and not dv then return lines end
  local D = e.scratch(e.count_max(q.shape, 1, #q.shape - 2) * L, "f32")   -- D = rowsum(P ∘ dP), a query row each
  local lse = e.save(n, "lse")
  -- D and dq: a warp per query row, over the key tiles
  local ops = { { "q", e.val(q), "r" }, { "k", e.val(k), "r" }, { "v", e.val(v), "r" }, { "dout", e.grad(n.out), "r" } }
  if dq then ops[#ops + 1] = { "dq", dq, "a" } end
  local kq = e.kernel { kind = flash_kind("bwd_dq", E, EV, causal) .. (dq and "" or "_nodq"), ops = ops,
    globals = flash_defs(E, EV, causal, "L", { string.format("#define FA_DQ %d", dq and 1 or 0) }),
    params = "const float *__restrict__ lse, float *__restrict__ dsum, int L, int S, float scale",
    body = FLASH_PRELUDE .. [[

    __shared__ float sq[FA_ROWS * FA_E], sdo[FA_ROWS * FA_EV], sk[FA_TILE * (FA_E + 1)], sv[FA_TILE * (FA_EV + 1)];
    const long long qb = bh * L * FA_E, ob = bh * L * FA_EV, kb = bh * S * FA_E, vb = bh * S * FA_EV;
    for (int x = threadIdx.x; x < FA_ROWS * FA_E; x += blockDim.x) sq[x] = r0 * FA_E + x < L * FA_E ? ld_q(qb + (long long)r0 * FA_E + x) : 0.0f;
    for (int x = threadIdx.x; x < FA_ROWS * FA_EV; x += blockDim.x) sdo[x] = r0 * FA_EV + x < L * FA_EV ? ld_dout(ob + (long long)r0 * FA_EV + x) : 0.0f;
    __syncthreads();
    float Di = 0, part = 0, acc[FA_DT];
    for (int u = 0; u < FA_DT; u++) acc[u] = 0;
    const float li = live ? lse[bh * L + row] : 0.0f;
    const int kend = FA_CAUSAL && r0 + FA_ROWS < S ? r0 + FA_ROWS : S;
    // pass 0: D = rowsum(P ∘ dP), the softmax's backward sum, as the CPU forms it (not
    // flash attention's rowsum(dO ∘ O): O is stored rounded, and dP - D cancels); pass 1: dq
    for (int pass = 0; pass < 1 + FA_DQ; pass++)
    for (int k0 = 0; k0 < kend; k0 += FA_TILE) {
        __syncthreads();
        for (int x = threadIdx.x; x < FA_TILE * FA_E; x += blockDim.x) {
            const int t = x / FA_E, d = x % FA_E;
            sk[t * (FA_E + 1) + d] = k0 + t < S ? ld_k(kb + (long long)(k0 + t) * FA_E + d) : 0.0f;
        }
        for (int x = threadIdx.x; x < FA_TILE * FA_EV; x += blockDim.x) {
            const int t = x / FA_EV, d = x % FA_EV;
            sv[t * (FA_EV + 1) + d] = k0 + t < S ? ld_v(vb + (long long)(k0 + t) * FA_EV + d) : 0.0f;
        }
        __syncthreads();
        if (!live) continue;
        const int j = k0 + lane;
        float ds = 0;
        if (j < S && (!FA_CAUSAL || j <= row)) {
            float dot = 0, dp = 0;
            for (int d = 0; d < FA_E; d++) dot += sq[w * FA_E + d] * sk[lane * (FA_E + 1) + d];
            for (int d = 0; d < FA_EV; d++) dp += sdo[w * FA_EV + d] * sv[lane * (FA_EV + 1) + d];
            const float p = so_exp_shifted(dot * scale, li);
            if (pass == 0) part += p * dp;
            else ds = so_softmax_grad(dp, p, Di);   // p (dp - D)
        }
        if (pass == 0) {
            if (k0 + FA_TILE >= kend) {   // the row's last tile: D for this kernel and dk's
                Di = fa_sum(part);
                if (lane == 0) dsum[bh * L + row] = Di;
            }
            continue;
        }
        for (int t = 0; t < FA_TILE; t++) {
            const float dst = __shfl_sync(FULL, ds, t);
            for (int u = 0; u < FA_DT; u++) {
                const int d = lane + 32 * u;
                if (d < FA_E) acc[u] += dst * sk[t * (FA_E + 1) + d];
            }
        }
    }
#if FA_DQ
    if (!live) return;
    for (int u = 0; u < FA_DT; u++) {
        const int d = lane + 32 * u;
        if (d < FA_E) acc_dq(qb + (long long)row * FA_E + d, scale * acc[u]);
    }
#endif]] }
  local rows_q = times(B, (L + FLASH_ROWS - 1) // FLASH_ROWS)
  add(e.launch(kq, ops, { { "void *", lse }, { "void *", D.ptr }, { "int", L }, { "int", S }, { "float", e.lit(scale) } }, { blocks = rows_q }))
  if not dk and not dv then return lines end
  -- dk and dv: a warp per key row, over the query tiles
  ops = { { "q", e.val(q), "r" }, { "k", e.val(k), "r" }, { "v", e.val(v), "r" }, { "dout", e.grad(n.out), "r" } }
  if dk then ops[#ops + 1] = { "dk", dk, "a" } end
  if dv then ops[#ops + 1] = { "dv", dv, "a" } end
  local kk = e.kernel { kind = flash_kind("bwd_dkv", E, EV, causal) .. (dk and "" or "_nodk") .. (dv and "" or "_nodv"), ops = ops,
    globals = flash_defs(E, EV, causal, "S", { string.format("#define FA_DK %d", dk and 1 or 0), string.format("#define FA_DV %d", dv and 1 or 0) }),
    params = "const float *__restrict__ lse, const float *__restrict__ dsum, int L, int S, float scale",
    body = FLASH_PRELUDE .. [[

    __shared__ float sk[FA_ROWS * FA_E], sv[FA_ROWS * FA_EV], sq[FA_TILE * (FA_E + 1)], sdo[FA_TILE * (FA_EV + 1)], sl[FA_TILE], sd[FA_TILE];
    const long long qb = bh * L * FA_E, ob = bh * L * FA_EV, kb = bh * S * FA_E, vb = bh * S * FA_EV;
    for (int x = threadIdx.x; x < FA_ROWS * FA_E; x += blockDim.x) sk[x] = r0 * FA_E + x < S * FA_E ? ld_k(kb + (long long)r0 * FA_E + x) : 0.0f;
    for (int x = threadIdx.x; x < FA_ROWS * FA_EV; x += blockDim.x) sv[x] = r0 * FA_EV + x < S * FA_EV ? ld_v(vb + (long long)r0 * FA_EV + x) : 0.0f;
    float gk[FA_DT], gv[FA_DT];
    for (int u = 0; u < FA_DT; u++) gk[u] = gv[u] = 0;
    // causal: the queries that see this block's first key start at its tile
    for (int q0 = FA_CAUSAL ? r0 / FA_TILE * FA_TILE : 0; q0 < L; q0 += FA_TILE) {
        __syncthreads();
        for (int x = threadIdx.x; x < FA_TILE * FA_E; x += blockDim.x) {
            const int t = x / FA_E, d = x % FA_E;
            sq[t * (FA_E + 1) + d] = q0 + t < L ? ld_q(qb + (long long)(q0 + t) * FA_E + d) : 0.0f;
        }
        for (int x = threadIdx.x; x < FA_TILE * FA_EV; x += blockDim.x) {
            const int t = x / FA_EV, d = x % FA_EV;
            sdo[t * (FA_EV + 1) + d] = q0 + t < L ? ld_dout(ob + (long long)(q0 + t) * FA_EV + d) : 0.0f;
        }
        for (int t = threadIdx.x; t < FA_TILE; t += blockDim.x) {
            sl[t] = q0 + t < L ? lse[bh * L + q0 + t] : 0.0f;
            sd[t] = q0 + t < L ? dsum[bh * L + q0 + t] : 0.0f;
        }
        __syncthreads();
        if (!live) continue;
        const int i = q0 + lane;   // this lane's query
        float p = 0, ds = 0;
        if (i < L && (!FA_CAUSAL || row <= i)) {
            float dot = 0, dp = 0;
            for (int d = 0; d < FA_E; d++) dot += sk[w * FA_E + d] * sq[lane * (FA_E + 1) + d];
            for (int d = 0; d < FA_EV; d++) dp += sv[w * FA_EV + d] * sdo[lane * (FA_EV + 1) + d];
            p = so_exp_shifted(dot * scale, sl[lane]);
            ds = so_softmax_grad(dp, p, sd[lane]);
        }
        for (int t = 0; t < FA_TILE; t++) {
            const float pt = __shfl_sync(FULL, p, t), dst = __shfl_sync(FULL, ds, t);
            for (int u = 0; u < FA_DT; u++) {
                const int d = lane + 32 * u;
                if (FA_DV && d < FA_EV) gv[u] += pt * sdo[t * (FA_EV + 1) + d];
                if (FA_DK && d < FA_E) gk[u] += dst * sq[t * (FA_E + 1) + d];
            }
        }
    }
    if (!live) return;
    for (int u = 0; u < FA_DT; u++) {
        const int d = lane + 32 * u;
#if FA_DK
        if (d < FA_E) acc_dk(kb + (long long)row * FA_E + d, scale * gk[u]);
#endif
#if FA_DV
        if (d < FA_EV) acc_dv(vb + (long long)row * FA_EV + d, gv[u]);
#endif
    }]] }
  add(e.launch(kk, ops, { { "void *", lse }, { "void *", D.ptr }, { "int", L }, { "int", S }, { "float", e.lit(scale) } },
    { blocks = times(B, (S + FLASH_ROWS - 1) // FLASH_ROWS) }))
  return lines
end

-- the op table's choice (gen/ops.lua's `fused`): the fused kernels, else the GEMMs
ops_cuda.scaled_dot_product_attention = {
  forward = function(e, n) if e.attention_fused(n) then return flash_forward(e, n) end return sdpa_gemms.forward(e, n) end,
  backward = function(e, n) if e.attention_fused(n) then return flash_backward(e, n) end return sdpa_gemms.backward(e, n) end,
}

---------------------------------------------------------------------------
-- pointwise losses (bce, bce_with_logits, mse, l1): loss = reduce(l(x, t)); mean and
-- sum in one block (a double sum, as the CPU's), none one value per element

local POINTWISE_LOSS = { bce = "bce", bce_with_logits = "bce_logits", mse = "mse", l1 = "l1", smooth_l1 = "smooth_l1",
                         huber = "huber", kl_div = "kl_div" }
-- the losses with a constant c (the scalar functions' third argument)
local LOSS_CONST = { smooth_l1 = function(a) return a.beta end, huber = function(a) return a.delta end,
                     kl_div = function(a) return a.log_target and 1 or 0 end }
for op, fn in pairs(POINTWISE_LOSS) do
  local const = LOSS_CONST[op]
  local c = const and ", c" or ""
  local params = "long long n, int reduction" .. (const and ", float c, double count" or "")
  -- reduction (kl_div's batchmean: the mean's count is the batch size), [c, count]
  local function args(e, n)
    local x, a = n.inputs[1], n.attrs
    local t = { { "int", REDUCTION[a.reduction == "batchmean" and "mean" or a.reduction] } }
    if const then
      t[2] = { "float", host_literal(const(a)) }
      t[3] = { "double", string.format("(double)(%s)", a.reduction == "batchmean" and e.batch(x) or e.numel(x)) }
    end
    return t
  end
  local count = const and "count" or "(double)n"
  ops_cuda[op] = {
    forward = function(e, n)
      local x, t = n.inputs[1], n.inputs[2]
      local ops = { { "x", e.val(x), "r" }, { "t", e.val(t), "r" }, { "loss", e.val(n.out), "w" } }
      local extra = args(e, n)
      if n.attrs.reduction == "none" then
        local body = string.format("st_loss(i, so_%s(ld_x(i), ld_t(i)%s));", fn, c)
        if not const then return pointwise(e, op .. "_none", ops, body, e.numel(x)) end
        return pointwise(e, op .. "_none", ops, body, e.numel(x), params:gsub("^long long n, ", ""), extra)
      end
      local k = e.kernel { kind = op, ops = ops, params = params,
        body = "double total = 0;\n    " .. BLOCK .. string.format(" total += so_%s(ld_x(i), ld_t(i)%s);\n", fn, c) ..
               "    total = block_sum(total);\n    if (threadIdx.x == 0) st_loss(0, (float)(reduction == 1 ? total / " .. (const and "count" or "n") .. " : total));" }
      local all = { { "long long", e.numel(x) } }
      for _, v in ipairs(extra) do all[#all + 1] = v end
      return e.launch(k, ops, all, { blocks = 1 })
    end,
    -- a target that needs a gradient (mse, l1, smooth_l1, huber: the op table's
    -- `symmetric`) gets the same rule, x and t swapped; kl_div's its own (so_kl_div_dt);
    -- gen/autodiff.lua refuses it for the others
    backward = function(e, n)
      local x, t = n.inputs[1], n.inputs[2]
      local lines = {}
      for i, pair in ipairs { { x, t }, { t, x } } do
        local a, b = pair[1], pair[2]
        local da = e.grad(a)
        local kl_t = op == "kl_div" and i == 2
        if kl_t then a, b = x, t end
        local grad = kl_t and "so_kl_div_dt" or string.format("so_%s_grad", fn)
        if da then
          local ops = { { "dl", e.grad(n.out), "r" }, { "x", e.val(a), "r" }, { "t", e.val(b), "r" }, { "dx", da, "a" } }
          local g = n.attrs.reduction == "none" and "ld_dl(i)" or "so_loss_grad(ld_dl(0), reduction == 1, " .. count .. ")"
          for _, l in ipairs(pointwise(e, op .. (kl_t and "_dt" or "_grad") .. (n.attrs.reduction == "none" and "_none" or ""), ops,
              string.format("acc_dx(i, %s(%s, ld_x(i), ld_t(i)%s));", grad, g, c),
              e.numel(x), params:gsub("^long long n, ", ""), args(e, n))) do
            lines[#lines + 1] = l
          end
        end
      end
      return lines
    end,
  }
end

-- cross entropy with probability targets (N, C, S): one block, a thread per (n, s) with
-- the CPU's log_softmax over C (float sums) saved as logp; mean divides by N·S
ce_soft_forward = function(e, n)
  local x, t, a = n.inputs[1], n.inputs[2], n.attrs
  local C, S = x.shape[2], dims_after(x.shape, 3)
  local ops = { { "x", e.val(x), "r" }, { "t", e.val(t), "r" }, { "loss", e.val(n.out), "w" } }
  -- weighted: each class's term times w[c] (the mean still over N·S, as PyTorch's)
  local kind, body = class_weighted(e, n, "cross_entropy_soft", ops, "double total = 0;\n    " .. BLOCK .. [[ {
        const long long base = i / S * C * S + i % S;
        float mx = -__int_as_float(0x7f800000), s = 0, l = 0;
        for (int c = 0; c < C; c++) { const float v = ld_x(base + c * S); if (v > mx) mx = v; }
        for (int c = 0; c < C; c++) s += so_exp_shifted(ld_x(base + c * S), mx);
        for (int c = 0; c < C; c++) {
            const float lp = so_log_softmax(ld_x(base + c * S), mx, s);
            logp[base + c * S] = lp;
            l -= so_ce_soft_q(ld_t(base + c * S), eps, C) * lp;
        }
        if (reduction == 0) st_loss(i, l);
        total += l;
    }
    total = block_sum(total);
    if (threadIdx.x == 0 && reduction != 0) st_loss(0, (float)(reduction == 1 ? total / n : total));]],
    { { "l -= so_ce_soft_q(", "l -= ld_w(c) * so_ce_soft_q(" } })
  local k = e.kernel { kind = kind, ops = ops, body = body, params = "long long n, int C, long long S, float *logp, float eps, int reduction" }
  return e.launch(k, ops, { { "long long", by(e.batch(x), S) }, { "int", C }, { "long long", S },
    { "void *", e.save(n, "logp") }, { "float", e.lit(a.label_smoothing) }, { "int", REDUCTION[a.reduction] } }, { blocks = 1 })
end
ce_soft_backward = function(e, n)
  local x, t, a = n.inputs[1], n.inputs[2], n.attrs
  local C, S = x.shape[2], dims_after(x.shape, 3)
  local dx = e.grad(x)
  if not dx then return {} end
  local ops = { { "dl", e.grad(n.out), "r" }, { "t", e.val(t), "r" }, { "dx", dx, "a" } }
  local kind, body = class_weighted(e, n, "cross_entropy_soft_grad", ops, [[const long long base = i / S * C * S + i % S;
        const float g = reduction == 0 ? ld_dl(i) : so_loss_grad(ld_dl(0), reduction == 1, (double)n);
        float qsum = 0;
        for (int c = 0; c < C; c++) qsum += so_ce_soft_q(ld_t(base + c * S), eps, C);
        for (int c = 0; c < C; c++)
            acc_dx(base + c * S, so_ce_soft_grad(g, logp[base + c * S], qsum, so_ce_soft_q(ld_t(base + c * S), eps, C)));]],
    { { "qsum += so_ce_soft_q(", "qsum += ld_w(c) * so_ce_soft_q(" }, { "qsum, so_ce_soft_q(", "qsum, ld_w(c) * so_ce_soft_q(" } })
  return pointwise(e, kind, ops, body, by(e.batch(x), S), "int C, long long S, const float *logp, float eps, int reduction",
    { { "int", C }, { "long long", S }, { "void *", e.save(n, "logp") }, { "float", e.lit(a.label_smoothing) }, { "int", REDUCTION[a.reduction] } })
end

---------------------------------------------------------------------------
-- GroupNorm (and InstanceNorm: a group per channel) on (N, C, S): one block per (n, g)
-- group of D = C/G·S values, statistics in double as the CPU's k_group_norm_*; dweight
-- and dbias one block per channel over the batch and positions (double block sums)
local function gn_dims(n)
  local x = n.inputs[1]
  return x.shape[2], dims_after(x.shape, 3), n.attrs.num_groups
end
ops_cuda.group_norm = {
  forward = function(e, n)
    local x, w, b = n.inputs[1], n.inputs[2], n.inputs[3]
    local C, S, G = gn_dims(n)
    local D = C // G * S
    local ops = { { "x", e.val(x), "r" }, { "y", e.val(n.out), "w" } }
    if w then ops[#ops + 1] = { "wt", e.val(w), "r" } end
    if b then ops[#ops + 1] = { "bs", e.val(b), "r" } end
    local kern = e.kernel { kind = "group_norm" .. (w and "_w" or "") .. (b and "_b" or ""), ops = ops,
      params = "long long groups, int G, int CG, long long S, float eps, float *save_mean, float *save_rstd",
      body = [[const long long D = (long long)CG * S;
    for (long long r = blockIdx.x; r < groups; r += gridDim.x) {
        const long long base = r * D;
        double sum = 0, ss = 0;
        for (long long i = threadIdx.x; i < D; i += blockDim.x) sum += ld_x(base + i);
        const double mean = block_sum(sum) / D;
        for (long long i = threadIdx.x; i < D; i += blockDim.x) { const double d = ld_x(base + i) - mean; ss += d * d; }
        ss = block_sum(ss);
        const float m = (float)mean, rstd = (float)(1.0 / sqrt(ss / D + eps));
        for (long long i = threadIdx.x; i < D; i += blockDim.x) {
            const int c = (int)(r % G) * CG + (int)(i / S);
            st_y(base + i, so_ln_apply(ld_x(base + i), m, rstd, ]] .. (w and "ld_wt(c)" or "1.0f") .. ", " ..
            (b and "ld_bs(c)" or "0.0f") .. [[));
            (void)c;
        }
        if (threadIdx.x == 0) { save_mean[r] = m; save_rstd[r] = rstd; }
    }]] }
    local groups = times(e.batch(x), G)
    local T = block_threads(D)
    return e.launch(kern, ops, { { "long long", groups }, { "int", G }, { "int", C // G }, { "long long", S }, { "float", e.lit(n.attrs.eps) },
      { "void *", e.save(n, "mean") }, { "void *", e.save(n, "rstd") } }, { grid = times(groups, T), threads = T })
  end,
  backward = function(e, n)
    local x, w, b = n.inputs[1], n.inputs[2], n.inputs[3]
    local C, S, G = gn_dims(n)
    local D = C // G * S
    local dy, dx, dw, db = e.grad(n.out), e.grad(x), w and e.grad(w), b and e.grad(b)
    local stats = { { "void *", e.save(n, "mean") }, { "void *", e.save(n, "rstd") } }
    local lines = {}
    local function add(t) for _, l in ipairs(t) do lines[#lines + 1] = l end end
    if dx then
      local ops = { { "dy", dy, "r" }, { "x", e.val(x), "r" }, { "dx", dx, "a" } }
      if w then ops[#ops + 1] = { "wt", e.val(w), "r" } end
      local gexpr = w and "ld_dy(base + i) * ld_wt((int)(r % G) * CG + (int)(i / S))" or "ld_dy(base + i)"
      local kern = e.kernel { kind = "group_norm_grad" .. (w and "_w" or ""), ops = ops,
        params = "long long groups, int G, int CG, long long S, const float *save_mean, const float *save_rstd",
        body = [[const long long D = (long long)CG * S;
    for (long long r = blockIdx.x; r < groups; r += gridDim.x) {
        const long long base = r * D;
        const float m = save_mean[r], rstd = save_rstd[r];
        double s1 = 0, s2 = 0;
        for (long long i = threadIdx.x; i < D; i += blockDim.x) {
            const float g = ]] .. gexpr .. [[;
            s1 += g;
            s2 += so_ln_term(g, ld_x(base + i), m, rstd);
        }
        const float m1 = (float)(block_sum(s1) / D), m2 = (float)(block_sum(s2) / D);
        for (long long i = threadIdx.x; i < D; i += blockDim.x)
            acc_dx(base + i, so_ln_grad(]] .. gexpr .. [[, ld_x(base + i), m, rstd, m1, m2));
    }]] }
      local groups = times(e.batch(x), G)
      local T = block_threads(D)
      add(e.launch(kern, ops, { { "long long", groups }, { "int", G }, { "int", C // G }, { "long long", S }, stats[1], stats[2] },
        { grid = times(groups, T), threads = T }))
    end
    if dw or db then
      local ops = { { "dy", dy, "r" }, { "x", e.val(x), "r" } }
      if dw then ops[#ops + 1] = { "dw", dw, "a" } end
      if db then ops[#ops + 1] = { "db", db, "a" } end
      local kern = e.kernel { kind = "group_norm_grad_wb" .. (dw and "_dw" or "") .. (db and "_db" or ""), ops = ops,
        params = "long long n, int C, int CG, int G, long long S, const float *save_mean, const float *save_rstd",
        body = [[const int c = blockIdx.x;
    double sw = 0, sb = 0;
    ]] .. BLOCK .. [[ {
        const long long bi = i / S, s = i % S, j = (bi * C + c) * S + s, r = bi * G + c / CG;
        const float g = ld_dy(j);
        sw += so_ln_term(g, ld_x(j), save_mean[r], save_rstd[r]);
        sb += g;
    }
    sw = block_sum(sw);
    sb = block_sum(sb);
    if (threadIdx.x == 0) {]] .. (dw and " acc_dw(c, (float)sw);" or " (void)sw;") .. (db and " acc_db(c, (float)sb);" or " (void)sb;") .. " }" }
      add(e.launch(kern, ops, { { "long long", by(e.batch(x), S) }, { "int", C }, { "int", C // G }, { "int", G }, { "long long", S },
        stats[1], stats[2] }, { blocks = C }))
    end
    return lines
  end,
}

---------------------------------------------------------------------------
-- Upsample (nearest, linear/bilinear) on (NC, IH, IW) (1-d: IH = OH = 1), the CPU's
-- k_upsample_*: each output reads its two neighbours per dim (the source index in
-- double); the backward a gather: each input sums the outputs that read it, row then
-- column, in the CPU's output order
local UP_SRC = { [[SO_FN void up_src(int dst, int in, double scale, int mode, int align, int *i0, int *i1, float *l) {
    if (mode == 0) {
        const int s = (int)floorf((float)(dst * scale));
        *i0 = *i1 = s < in - 1 ? s : in - 1;
        *l = 0;
        return;
    }
    double src = align ? dst * scale : (dst + 0.5) * scale - 0.5;
    if (src < 0) src = 0;
    int a = (int)src;
    if (a > in - 1) a = in - 1;
    *i0 = a;
    *i1 = a < in - 1 ? a + 1 : a;
    *l = (float)(src - a);
}]] }
local UP_PARAMS = "long long n, int IH, int IW, int OH, int OW, int mode, int align, double sh, double sw"
local function up_args(n, count)
  local x = n.inputs[1]
  local function hw(shape) if #shape == 3 then return 1, shape[3] end return shape[3], shape[4] end
  local IH, IW = hw(x.shape)
  local OH, OW = hw(n.out.shape)
  local sc = n.attrs.scales
  local sh, sw = #x.shape == 3 and 0 or sc[1], sc[#sc]
  return { { "long long", count }, { "int", IH }, { "int", IW }, { "int", OH }, { "int", OW },
    { "int", n.attrs.mode == "nearest" and 0 or 1 }, { "int", n.attrs.align_corners and 1 or 0 },
    { "double", require("util").c_float(sh, "") }, { "double", require("util").c_float(sw, "") } }
end
ops_cuda.upsample = {
  forward = function(e, n)
    local ops = { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }
    local k = e.kernel { kind = "upsample", ops = ops, params = UP_PARAMS, globals = UP_SRC, body = GRID .. [[ {
        const long long c = i / ((long long)OH * OW), base = c * IH * IW;
        const int oh = (int)(i / OW % OH), ow = (int)(i % OW);
        int h0, h1, w0, w1;
        float lh, lw;
        up_src(oh, IH, sh, mode, align, &h0, &h1, &lh);
        up_src(ow, IW, sw, mode, align, &w0, &w1, &lw);
        st_y(i, (1 - lh) * ((1 - lw) * ld_x(base + (long long)h0 * IW + w0) + lw * ld_x(base + (long long)h0 * IW + w1)) +
                lh * ((1 - lw) * ld_x(base + (long long)h1 * IW + w0) + lw * ld_x(base + (long long)h1 * IW + w1)));
    }]] }
    local count = e.numel(n.out)
    return e.launch(k, ops, up_args(n, count), { grid = count })
  end,
  backward = function(e, n)
    local dx = e.grad(n.inputs[1])
    if not dx then return {} end
    local ops = { { "dy", e.grad(n.out), "r" }, { "dx", dx, "a" } }
    local k = e.kernel { kind = "upsample_grad", ops = ops, params = UP_PARAMS, globals = UP_SRC, body = GRID .. [[ {
        const long long c = i / ((long long)IH * IW);
        const int h = (int)(i / IW % IH), w = (int)(i % IW);
        float s = 0;
        for (int oh = 0; oh < OH; oh++) {
            int h0, h1;
            float lh;
            up_src(oh, IH, sh, mode, align, &h0, &h1, &lh);
            if (h0 != h && h1 != h) continue;
            for (int ow = 0; ow < OW; ow++) {
                int w0, w1;
                float lw;
                up_src(ow, IW, sw, mode, align, &w0, &w1, &lw);
                if (w0 != w && w1 != w) continue;
                const float g = ld_dy((c * OH + oh) * OW + ow);
                if (h0 == h && w0 == w) s += (1 - lh) * (1 - lw) * g;
                if (h0 == h && w1 == w) s += (1 - lh) * lw * g;
                if (h1 == h && w0 == w) s += lh * (1 - lw) * g;
                if (h1 == h && w1 == w) s += lh * lw * g;
            }
        }
        acc_dx(i, s);
    }]] }
    local count = e.numel(n.inputs[1])
    return e.launch(k, ops, up_args(n, count), { grid = count })
  end,
}

---------------------------------------------------------------------------
-- nll_loss: log-probabilities (N, C, ...) against class indices, one block as the
-- cross entropy's (ignore_index; mean over the targets not ignored, in double)
ops_cuda.nll_loss = {
  forward = function(e, n)
    local x, t, a = n.inputs[1], n.inputs[2], n.attrs
    local C, S = x.shape[2], dims_after(x.shape, 3)
    local ops = { { "x", e.val(x), "r" }, { "loss", e.val(n.out), "w" } }
    local kind, body = class_weighted(e, n, "nll_loss", ops, "double total = 0, count = 0;\n    " .. BLOCK .. [[ {
        const long long y = target[i];
        float l = 0;
        if (y != ignore) { l = -ld_x((i / S * C + y) * S + i % S); count += 1; }
        if (reduction == 0) st_loss(i, l);
        total += l;
    }
    total = block_sum(total);
    count = block_sum(count);
    if (threadIdx.x == 0 && reduction != 0) st_loss(0, (float)(reduction == 1 ? total / count : total));]],
      { { "l = -ld_x(", "l = -ld_w(y) * ld_x(" }, { "count += 1;", "count += ld_w(y);" } })
    local k = e.kernel { kind = kind, ops = ops, body = body,
      params = "long long n, int C, long long S, const long long *target, long long ignore, int reduction" }
    return e.launch(k, ops, { { "long long", by(e.batch(x), S) }, { "int", C }, { "long long", S },
      { "void *", e.val(t).ptr }, { "long long", a.ignore_index }, { "int", REDUCTION[a.reduction] } }, { blocks = 1 })
  end,
  backward = function(e, n)
    local x, t, a = n.inputs[1], n.inputs[2], n.attrs
    local dx = e.grad(x)
    if not dx then return {} end
    local C, S = x.shape[2], dims_after(x.shape, 3)
    local ops = { { "dl", e.grad(n.out), "r" }, { "dx", dx, "a" } }
    local kind, body = class_weighted(e, n, "nll_loss_grad", ops,
      "double count = 0;\n    " .. BLOCK .. " count += target[i] != ignore;\n    count = block_sum(count);\n" ..
      "    const float g0 = reduction == 1 ? (float)(ld_dl(0) / count) : ld_dl(0);\n    " .. BLOCK .. [[ {
        const long long y = target[i];
        if (y == ignore) continue;
        acc_dx((i / S * C + y) * S + i % S, -(reduction == 0 ? ld_dl(i) : g0));
    }]], { { "count += target[i] != ignore;", "if (target[i] != ignore) count += ld_w(target[i]);" },
           { "-(reduction == 0 ? ld_dl(i) : g0)", "-((reduction == 0 ? ld_dl(i) : g0) * ld_w(y))" } })
    local k = e.kernel { kind = kind, ops = ops, body = body,
      params = "long long n, int C, long long S, const long long *target, long long ignore, int reduction" }
    return e.launch(k, ops, { { "long long", by(e.batch(x), S) }, { "int", C }, { "long long", S },
      { "void *", e.val(t).ptr }, { "long long", a.ignore_index }, { "int", REDUCTION[a.reduction] } }, { blocks = 1 })
  end,
}

---------------------------------------------------------------------------
-- RMSNorm over the last D values of each row, as layer_norm's kernels without the mean:
-- one block per row, the sum of squares in double (the CPU's k_rms_norm_*); dweight in
-- fixed chunks of rows, then the chunks in order (deterministic)
ops_cuda.rms_norm = {
  forward = function(e, n)
    local x, w = n.inputs[1], n.inputs[2]
    local k, D = ln_layout(n)
    local rows = e.rows(x, k)
    local ops = { { "x", e.val(x), "r" }, { "y", e.val(n.out), "w" } }
    if w then ops[#ops + 1] = { "wt", e.val(w), "r" } end
    local kern = e.kernel { kind = "rms_norm" .. (w and "_w" or ""), ops = ops,
      params = "long long rows, int D, float eps, float *save_rstd",
      body = [[for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long base = r * D;
        double ss = 0;
        for (int i = threadIdx.x; i < D; i += blockDim.x) { const double v = ld_x(base + i); ss += v * v; }
        ss = block_sum(ss);
        const float rstd = (float)(1.0 / sqrt(ss / D + eps));
        for (int i = threadIdx.x; i < D; i += blockDim.x) st_y(base + i, ld_x(base + i) * rstd]] ..
        (w and " * ld_wt(i)" or "") .. [[);
        if (threadIdx.x == 0) save_rstd[r] = rstd;
    }]] }
    local T = block_threads(D)
    -- eps = nil: float32's machine epsilon (torch.finfo), the CUDA program computing in float
    return e.launch(kern, ops, { { "long long", rows }, { "int", D }, { "float", e.lit(n.attrs.eps or 2.0 ^ -23) },
      { "void *", e.save(n, "rstd") } }, { grid = times(rows, T), threads = T })
  end,
  backward = function(e, n)
    local x, w = n.inputs[1], n.inputs[2]
    local k, D = ln_layout(n)
    local rows = e.rows(x, k)
    local dy, dx, dw = e.grad(n.out), e.grad(x), w and e.grad(w)
    local rstd = { "void *", e.save(n, "rstd") }
    local lines = {}
    local function add(t) for _, l in ipairs(t) do lines[#lines + 1] = l end end
    if dx then
      local ops = { { "dy", dy, "r" }, { "x", e.val(x), "r" }, { "dx", dx, "a" } }
      if w then ops[#ops + 1] = { "wt", e.val(w), "r" } end
      local g = w and "ld_dy(base + i) * ld_wt(i)" or "ld_dy(base + i)"
      local kern = e.kernel { kind = "rms_norm_grad" .. (w and "_w" or ""), ops = ops,
        params = "long long rows, int D, const float *save_rstd",
        body = [[for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long base = r * D;
        const float rstd = save_rstd[r];
        double s = 0;
        for (int i = threadIdx.x; i < D; i += blockDim.x) s += (double)(]] .. g .. [[) * ld_x(base + i);
        const float m = (float)(block_sum(s) / D);
        for (int i = threadIdx.x; i < D; i += blockDim.x)
            acc_dx(base + i, rstd * ((]] .. g .. [[) - ld_x(base + i) * rstd * rstd * m));
    }]] }
      local T = block_threads(D)
      add(e.launch(kern, ops, { { "long long", rows }, { "int", D }, rstd }, { grid = times(rows, T), threads = T }))
    end
    if dw then
      add(norm_param_grads(e, "rms_norm_grad_w", dy, x, dw, nil, D, rows, "const float *save_rstd", { rstd },
        "g * ld_x(r * D + col) * save_rstd[r]", false))
    end
    return lines
  end,
}

---------------------------------------------------------------------------
-- randn / rand (_like): element i of the op's Philox stream at this step (gen/ops.lua's
-- `random`), runtime/philox.h's uniforms through scalar_ops.h, the CPU's k_randn_forward
-- (Box–Muller from uniforms 2i and 2i+1, in double) and k_rand_forward, so a CUDA
-- program draws the CPU's numbers.  The step is read on the device (m->d_step), as
-- dropout's: a captured CUDA Graph replays each step's draws.
ops_cuda.random = {
  forward = function(e, n)
    local normal = n.attrs.dist == "normal"
    local ops = { { "y", e.val(n.out), "w" } }
    local stream = "(*step << 20 | (unsigned long long)op)"
    local body = normal and string.format([[const double u1 = so_philox_uniform_at(seed, %s, 2 * (so_u64)i) + 1e-12,
            u2 = so_philox_uniform_at(seed, %s, 2 * (so_u64)i + 1);
        st_y(i, (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2)));]], stream, stream)
      or string.format("st_y(i, so_philox_uniform_at(seed, %s, (so_u64)i));", stream)
    return pointwise(e, normal and "randn" or "rand", ops, body, e.numel(n.out),
      "unsigned long long seed, const unsigned long long *step, unsigned op",
      { { "unsigned long long", "m->seed" }, { "const unsigned long long *", "m->d_step" }, { "unsigned", string.format("%du", n.index) } })
  end,
}

-- tensor(values): the values in the kernel's __constant__ table, written at every forward
ops_cuda.constant = {
  forward = function(e, n)
    local vals = {}
    for i, v in ipairs(n.attrs.values) do vals[i] = ops_cuda.literal(v) end
    local ops = { { "y", e.val(n.out), "w" } }
    local k = e.kernel { kind = "constant" .. n.index, ops = ops, params = "long long n",
      globals = { string.format("__constant__ float values[%d] = { %s };", #vals, table.concat(vals, ", ")) },
      body = GRID .. " st_y(i, values[i]);" }
    return e.launch(k, ops, { { "long long", #vals } }, { grid = #vals })
  end,
}

---------------------------------------------------------------------------
-- Broadcast and repeat (tile/expand, comparisons, where): every operand is seen through
-- its sizes on the output's dims (MAXDIM of them, padded in front with 1s): output
-- element (o_0, ...) reads operand element (o_j mod a_j, ...), a_j = 1 where the operand
-- broadcasts and the source's size where it repeats (tile).  A gradient is a gather: each
-- operand element sums the output elements that read it, in increasing output order
-- (the CPU's k_tile_backward / k_where_backward order), no atomics.

-- an operand's sizes on the output's dims (`t` nil: a number, read nowhere)
local function on_out(shape, out)
  local a, k = {}, #out - #shape
  for j = 1, #out do a[j] = shape and shape[j - k] or 1 end
  return a
end
-- params and args: the output's sizes s0.., then each operand's a0..; `ops_sizes` = { {letter, sizes}, ... }
local function bcast_params(out, ops_sizes)
  local pad = MAXDIM - #out
  local params, args = {}, {}
  local function put(prefix, sizes)
    for j = 1, MAXDIM do
      params[#params + 1] = string.format("long long %s%d", prefix, j - 1)
      args[#args + 1] = { "long long", sizes[j - pad] or 1 }
    end
  end
  put("s", out)
  for _, o in ipairs(ops_sizes) do put(o[1], o[2]) end
  return table.concat(params, ", "), args
end
local function size_array(prefix)
  local t = {}
  for j = 1, MAXDIM do t[j] = prefix .. (j - 1) end
  return string.format("const long long %s_[%d] = { %s };", prefix, MAXDIM, table.concat(t, ", "))
end
-- forward: off_L, operand L's element for output element i
local function bcast_offsets(letters)
  local lines = { size_array("s") }
  local init, step = { "r = i" }, {}
  for _, l in ipairs(letters) do
    lines[#lines + 1] = size_array(l)
    init[#init + 1] = string.format("off_%s = 0, run_%s = 1", l, l)
    step[#step + 1] = string.format("off_%s += cj %% %s_[j] * run_%s; run_%s *= %s_[j];", l, l, l, l, l)
  end
  lines[#lines + 1] = "long long " .. table.concat(init, ", ") .. ";"
  lines[#lines + 1] = string.format("for (int j = %d; j >= 0; j--) { const long long cj = r %% s_[j]; r /= s_[j]; %s }",
    MAXDIM - 1, table.concat(step, " "))
  return table.concat(lines, "\n        ") .. "\n        "
end
-- backward: operand G's element i sums `term` (into float s) over the output elements o
-- that read it, the other operands' elements there as off_L
local function bcast_gather(g, letters, term)
  local lines = { size_array("s"), size_array(g) }
  local init, step = {}, {}
  for _, l in ipairs(letters) do
    lines[#lines + 1] = size_array(l)
    init[#init + 1] = string.format(", off_%s = 0, run_%s = 1", l, l)
    step[#step + 1] = string.format(" off_%s += oj %% %s_[j] * run_%s; run_%s *= %s_[j];", l, l, l, l, l)
  end
  return table.concat(lines, "\n        ") .. string.format([[

        long long at[%d], r = i, copies = 1;
        for (int j = %d; j >= 0; j--) { at[j] = r %% %s_[j]; r /= %s_[j]; copies *= s_[j] / %s_[j]; }
        float s = 0;
        for (long long q = 0; q < copies; q++) {
            long long t = q, o = 0, run = 1%s;
            for (int j = %d; j >= 0; j--) {
                const long long rep = s_[j] / %s_[j], oj = at[j] + t %% rep * %s_[j];
                t /= rep; o += oj * run; run *= s_[j];%s
            }
            %s
        }
        acc_d%s(i, s);]], MAXDIM, MAXDIM - 1, g, g, g, table.concat(init), MAXDIM - 1, g, g, table.concat(step), term, g)
end
-- a 0-d output as one element
local function out_shape(n) return #n.out.shape > 0 and n.out.shape or { 1 } end

-- expand / tile (gen/ops.lua's `tile`): x's sizes on the output's dims repeat
ops_cuda.tile = {
  forward = function(e, n)
    local out = out_shape(n)
    local params, args = bcast_params(out, { { "x", on_out(n.inputs[1].shape, out) } })
    return pointwise(e, "tile", { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } },
      bcast_offsets { "x" } .. "st_y(i, ld_x(off_x));", e.numel(n.out), params, args)
  end,
  backward = function(e, n)
    local dx = e.grad(n.inputs[1])
    if not dx then return {} end
    local out = out_shape(n)
    local params, args = bcast_params(out, { { "x", on_out(n.inputs[1].shape, out) } })
    return pointwise(e, "tile_grad", { { "dy", e.grad(n.out), "r" }, { "dx", dx, "a" } },
      bcast_gather("x", {}, "s += ld_dy(o);"), e.numel(n.inputs[1]), params, args)
  end,
}

-- argmax over a dim, (OUTER, D, INNER) as the sum's layout: the first index of the
-- maximum, NaN counting as the maximum (the CPU's and PyTorch's)
ops_cuda.argmax = {
  forward = function(e, n)
    local o, D, inner = reduce_layout(e, n)
    return pointwise(e, "argmax", { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }, [[const long long o = i / INNER, in = i % INNER;
        long long best = 0;
        float m = ld_x(o * D * INNER + in);
        for (long long d = 1; d < D; d++) {
            const float v = ld_x((o * D + d) * INNER + in);
            if (v > m || (v != v && m == m)) { m = v; best = d; }
        }
        y[i] = best;]], times(o, inner), "long long D, long long INNER", { { "long long", D }, { "long long", inner } })
  end,
}

-- comparisons gt lt ge le eq ne: 0/1 into the int64 output, two tensors broadcast
-- together (an int64 one read as float, as PyTorch promotes it) or a tensor and a number
local COMPARE = { gt = ">", lt = "<", ge = ">=", le = "<=", eq = "==", ne = "!=" }
ops_cuda.compare = {
  forward = function(e, n)
    local x, y = n.inputs[1], n.inputs[2]
    local out = out_shape(n)
    local sizes = { { "a", on_out(x.shape, out) } }
    local ops = { { "a", e.val(x), "r" } }
    if y then sizes[2] = { "b", on_out(y.shape, out) }; ops[2] = { "b", e.val(y), "r" } end
    ops[#ops + 1] = { "y", e.val(n.out), "w" }
    local params, args = bcast_params(out, sizes)
    params = params .. ", float scalar"
    args[#args + 1] = { "float", host_literal(y and 0 or n.attrs.scalar) }
    local rhs = y and "ld_b(off_b)" or "scalar"
    return pointwise(e, "compare_" .. n.attrs.as .. (y and "" or "_scalar"), ops,
      bcast_offsets(y and { "a", "b" } or { "a" }) .. string.format("st_y(i, ld_a(off_a) %s %s ? 1.0f : 0.0f);", COMPARE[n.attrs.as], rhs),
      e.numel(n.out), params, args)
  end,
}

-- where(cond, a, b) / masked_fill: cond (int64, nonzero = true) and the tensors among a, b
-- broadcast together; a number stands where attrs.a / attrs.b is one
local function where_ab(n)
  if n.attrs.a ~= nil then return nil, n.inputs[2] end
  if n.attrs.b ~= nil then return n.inputs[2], nil end
  return n.inputs[2], n.inputs[3]
end
local function where_sizes(n, a, b)
  local out = out_shape(n)
  local sizes = { { "c", on_out(n.inputs[1].shape, out) } }
  if a then sizes[#sizes + 1] = { "a", on_out(a.shape, out) } end
  if b then sizes[#sizes + 1] = { "b", on_out(b.shape, out) } end
  return out, sizes
end
ops_cuda.where = {
  forward = function(e, n)
    local a, b = where_ab(n)
    local out, sizes = where_sizes(n, a, b)
    local ops, letters = { { "c", e.val(n.inputs[1]), "r" } }, { "c" }
    if a then ops[#ops + 1] = { "a", e.val(a), "r" }; letters[#letters + 1] = "a" end
    if b then ops[#ops + 1] = { "b", e.val(b), "r" }; letters[#letters + 1] = "b" end
    ops[#ops + 1] = { "y", e.val(n.out), "w" }
    local params, args = bcast_params(out, sizes)
    params = params .. ", float av, float bv"
    args[#args + 1] = { "float", host_literal(n.attrs.a or 0) }
    args[#args + 1] = { "float", host_literal(n.attrs.b or 0) }
    local va, vb = a and "ld_a(off_a)" or "av", b and "ld_b(off_b)" or "bv"
    return pointwise(e, "where_" .. table.concat(letters), ops,
      bcast_offsets(letters) .. string.format("st_y(i, ld_c(off_c) != 0.0f ? %s : %s);", va, vb), e.numel(n.out), params, args)
  end,
  backward = function(e, n)
    local a, b = where_ab(n)
    local out, sizes = where_sizes(n, a, b)
    local params, args = bcast_params(out, sizes)
    local lines = {}
    for _, side in ipairs { { "a", a, "!=" }, { "b", b, "==" } } do
      local letter, t, test = side[1], side[2], side[3]
      local dt = t and e.grad(t)
      if dt then
        -- the sizes' params name every operand; only c and this one are read
        local ops = { { "c", e.val(n.inputs[1]), "r" }, { "dy", e.grad(n.out), "r" }, { "d" .. letter, dt, "a" } }
        for _, l in ipairs(pointwise(e, string.format("where_grad_%s_c%s%s", letter, a and "a" or "", b and "b" or ""), ops,
            bcast_gather(letter, { "c" }, string.format("if (ld_c(off_c) %s 0.0f) s += ld_dy(o);", test)),
            e.numel(t), params, args)) do lines[#lines + 1] = l end
      end
    end
    return lines
  end,
}

---------------------------------------------------------------------------
-- adaptive average pooling on (NC, IH, IW) (1-d: IH = OH = 1), PyTorch's windows
-- [floor(i In / Out), ceil((i + 1) In / Out)) as the CPU's k_adaptive_avg_pool_*; the
-- backward a gather (each input sums the outputs whose window holds it, in order)
local ADAPTIVE = { "#define ad_start(i, in, out) ((int)(((long long)(i) * (in)) / (out)))",
                   "#define ad_end(i, in, out) ((int)((((long long)(i) + 1) * (in) + (out) - 1) / (out)))" }
local function adaptive_args(n, count)
  local x = n.inputs[1].shape
  local y = n.out.shape
  local IH, IW, OH, OW = 1, x[3], 1, y[3]
  if #x == 4 then IH, IW, OH, OW = x[3], x[4], y[3], y[4] end
  return { { "long long", count }, { "int", IH }, { "int", IW }, { "int", OH }, { "int", OW } }
end
ops_cuda.adaptive_avg_pool = {
  forward = function(e, n)
    local ops = { { "x", e.val(n.inputs[1]), "r" }, { "y", e.val(n.out), "w" } }
    local k = e.kernel { kind = "adaptive_avg_pool", ops = ops, params = "long long n, int IH, int IW, int OH, int OW", globals = ADAPTIVE,
      body = GRID .. [[ {
        const long long c = i / ((long long)OH * OW);
        const int oh = (int)(i / OW % OH), ow = (int)(i % OW);
        const int h0 = ad_start(oh, IH, OH), h1 = ad_end(oh, IH, OH), w0 = ad_start(ow, IW, OW), w1 = ad_end(ow, IW, OW);
        float s = 0;
        for (int h = h0; h < h1; h++) for (int w = w0; w < w1; w++) s += ld_x((c * IH + h) * IW + w);
        st_y(i, s / (float)((h1 - h0) * (w1 - w0)));
    }]] }
    local count = e.numel(n.out)
    return e.launch(k, ops, adaptive_args(n, count), { grid = count })
  end,
  backward = function(e, n)
    local dx = e.grad(n.inputs[1])
    if not dx then return {} end
    local ops = { { "dy", e.grad(n.out), "r" }, { "dx", dx, "a" } }
    local k = e.kernel { kind = "adaptive_avg_pool_grad", ops = ops, params = "long long n, int IH, int IW, int OH, int OW", globals = ADAPTIVE,
      body = GRID .. [[ {
        const long long c = i / ((long long)IH * IW);
        const int h = (int)(i / IW % IH), w = (int)(i % IW);
        float s = 0;
        for (int oh = 0; oh < OH; oh++) {
            const int h0 = ad_start(oh, IH, OH), h1 = ad_end(oh, IH, OH);
            if (h < h0 || h >= h1) continue;
            for (int ow = 0; ow < OW; ow++) {
                const int w0 = ad_start(ow, IW, OW), w1 = ad_end(ow, IW, OW);
                if (w >= w0 && w < w1) s += ld_dy((c * OH + oh) * OW + ow) / (float)((h1 - h0) * (w1 - w0));
            }
        }
        acc_dx(i, s);
    }]] }
    local count = e.numel(n.inputs[1])
    return e.launch(k, ops, adaptive_args(n, count), { grid = count })
  end,
}

-- `step`: one position of a sampled model's forward on the GPU (gen/entries.lua's
-- decode step, written into model.cu's model_sample_step by gen/emit_cuda.lua), the CUDA
-- half of gen/ops_cpu.lua's `step` rules, with the same arithmetic: float rows in the
-- decode arena on the device (position-major: attention reads the earlier positions'
-- keys and values there, the cache), sums in float but the normalizations' in double,
-- each kernel's store rounded to the format forward stores the tensor in.  A rule
-- returns the host lines that launch its kernels for position `t`.  The context `s` is
-- ops_cpu's (s.row, s.rows, s.param, s.R, s.axis, s.index, s.lit, s.T, s.token, s.refuse:
-- host expressions of device pointers) and
--   s.round                the format the output's row is rounded to (f32: none)
--   s.kernel(kind, params, body, threads)   an NVRTC kernel (its name: kind and s.round)
--   s.launch(k, args, blocks, threads)      host lines launching it; args { {ctype, expr} }
local ops_cpu = require "ops_cpu"
local STEP_GRID = "for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)"
local function ptr(x) return { "void *", "(void *)(" .. x .. ")" } end
-- y[i] = f(x[start + i]) over one row: copies (dropout, views, casts), gathers, activations
local function step_map(s, n, kind, x, index, f)
  local k = s.kernel(kind, "float *__restrict__ y, const float *__restrict__ xs, int n",
    string.format("%s { const double x = xs[%s]; y[i] = so_round_%s((float)(%s)); }", STEP_GRID, index, s.round, f))
  return s.launch(k, { ptr(s.row(n.out)), ptr(x), { "int", s.R(n.out) } }, string.format("lc_blocks(%d, 256)", s.R(n.out)), 256)
end
local function row_copy(s, n) return step_map(s, n, "dec_copy", s.row(n.inputs[1]), "i", "x") end
local step = {}
step.embedding = function(s, n)
  local w, C = s.param(n.inputs[2]), n.inputs[2].shape[2]
  return step_map(s, n, "dec_copy", string.format("%s + (size_t)%s * %d", w.base, s.token(), C), "i", "x")
end
step.dropout, step.reshape, step.flatten, step.cast = row_copy, row_copy, row_copy, row_copy
for _, name in ipairs { "relu", "sigmoid", "tanh", "silu", "gelu" } do
  step[name] = function(s, n)
    local f = ops_cpu.step_act(n)
    local kind = (name == "gelu" and n.attrs.approximate == "tanh") and "gelu_tanh" or name
    return step_map(s, n, "dec_" .. kind, s.row(n.inputs[1]), "i", f)
  end
end
local function gather_step(s, n)
  local sizes, strides, start = ops_cpu.step_gather(s, n)
  if not sizes then return row_copy(s, n) end
  local index = s.index(sizes, strides, "i")
  return step_map(s, n, index == "i" and "dec_copy" or ("dec_gather_" .. s.hash(index)),
    s.row(n.inputs[1]) .. (start ~= 0 and (" + " .. start) or ""), index, "x")
end
step.transpose, step.permute, step.slice = gather_step, gather_step, gather_step
-- add, sub, mul, div: gen/ops_cpu.lua's operands, each read through a kernel parameter
for _, name in ipairs { "add", "sub", "mul", "div" } do
  step[name] = function(s, n)
    local params, args = { "float *__restrict__ y" }, { ptr(s.row(n.out)) }
    local function operand(x)
      params[#params + 1] = string.format("const float *__restrict__ a%d", #args)
      args[#args + 1] = ptr(x)
      return "a" .. (#args - 1)
    end
    local sub = setmetatable({
      row = function(x) return operand(s.row(x)) end,
      param = function(x) local v = s.param(x); return { base = operand(v.base), shape = v.shape, strides = v.strides } end,
    }, { __index = s })
    local R, expr = ops_cpu.step_binary(sub, n)
    params[#params + 1] = "int t, int n"
    args[#args + 1] = { "int", "t" }
    args[#args + 1] = { "int", R }
    local k = s.kernel("dec_" .. name .. "_" .. s.hash(expr), table.concat(params, ", "),
      string.format("%s y[i] = so_round_%s(%s);", STEP_GRID, s.round, expr))
    return s.launch(k, args, string.format("lc_blocks(%d, 256)", R), 256)
  end
end
-- y (rows, N) = x (rows, K) @ w: one warp per output, w's row j at j * sn, its k-th at k * sk
local function warp_dot(s, n, kind, x, wbase, b, rows, K, N, sk, sn)
  local k = s.kernel(kind .. (b and "_b" or ""),
    "float *__restrict__ y, const float *__restrict__ x, const float *__restrict__ w, " .. (b and "const float *__restrict__ b, " or "") ..
    "int rows, int K, int N, int sk, int sn", string.format([[const int lane = threadIdx.x & 31;
    const int warps = (int)(gridDim.x * blockDim.x) >> 5;
    for (int o = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5); o < rows * N; o += warps) {
        const float *xr = x + (size_t)(o / N) * K, *wj = w + (size_t)(o %% N) * sn;
        float acc = 0;
        for (int i = lane; i < K; i += 32) acc += xr[i] * wj[(size_t)i * sk];
        for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
        if (lane == 0) y[o] = so_round_%s(acc%s);
    }]], s.round, b and " + b[o % N]" or ""))
  local args = { ptr(s.row(n.out)), ptr(x), ptr(wbase) }
  if b then args[#args + 1] = ptr(b) end
  for _, v in ipairs { rows, K, N, sk, sn } do args[#args + 1] = { "int", v } end
  return s.launch(k, args, string.format("lc_blocks(%d, 256)", rows * N * 32), 256)
end
step.linear = function(s, n)
  local x, w, b = n.inputs[1], s.param(n.inputs[2]), n.inputs[3] and s.param(n.inputs[3])
  local outf, inf = n.inputs[2].shape[1], n.inputs[2].shape[2]
  return warp_dot(s, n, "dec_linear", s.row(x), w.base, b and b.base, s.R(x) // inf, inf, outf, 1, inf)
end
step.matmul = function(s, n)
  local a, b = n.inputs[1], s.param(n.inputs[2])
  local K, N = n.inputs[2].shape[1], n.inputs[2].shape[2]
  return warp_dot(s, n, "dec_matmul", s.row(a), b.base, nil, s.R(a) // K, K, N, b.strides[1], b.strides[2])
end
step.layer_norm = function(s, n)
  local x, N = n.inputs[1], dims_after(n.attrs.normalized_shape, 1)
  local w, b = n.inputs[2] and s.param(n.inputs[2]), n.inputs[3] and s.param(n.inputs[3])
  local k = s.kernel("dec_layer_norm" .. (w and "_w" or "") .. (b and "_b" or ""),
    "float *__restrict__ y, const float *__restrict__ x, " .. (w and "const float *__restrict__ w, " or "") ..
    (b and "const float *__restrict__ b, " or "") .. "int groups, int N, float eps", string.format([[for (int g = blockIdx.x; g < groups; g += gridDim.x) {
        const float *xg = x + (size_t)g * N;
        double sum = 0, ss = 0;
        for (int i = threadIdx.x; i < N; i += blockDim.x) sum += xg[i];
        const double mean = block_sum(sum) / N;
        for (int i = threadIdx.x; i < N; i += blockDim.x) { const double d = xg[i] - mean; ss += d * d; }
        const double rstd = 1.0 / sqrt(block_sum(ss) / N + eps);
        for (int i = threadIdx.x; i < N; i += blockDim.x)
            y[(size_t)g * N + i] = so_round_%s((float)((xg[i] - mean) * rstd * %s + %s));
    }]], s.round, w and "w[i]" or "1", b and "b[i]" or "0"))
  local args = { ptr(s.row(n.out)), ptr(s.row(x)) }
  if w then args[#args + 1] = ptr(w.base) end
  if b then args[#args + 1] = ptr(b.base) end
  args[#args + 1] = { "int", s.R(x) // N }
  args[#args + 1] = { "int", N }
  args[#args + 1] = { "float", s.lit(n.attrs.eps) }
  return s.launch(k, args, tostring(s.R(x) // N), 256)
end
-- causal attention of position t's query over positions 0..t: one block per head, the
-- t + 1 scores in shared memory (the window's T at most)
step.scaled_dot_product_attention = function(s, n)
  local q, kk, v = n.inputs[1], n.inputs[2], n.inputs[3]
  local E, Ev = q.shape[#q.shape], v.shape[#v.shape]
  local H = s.R(q) // E
  local k = s.kernel("dec_attention_t" .. s.T,
    "float *__restrict__ y, const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v, int t, int H, int E, int Ev, float scale",
    string.format([[__shared__ float p[%d];
    __shared__ float red[256];
    const int h = blockIdx.x;
    const float *qh = q + (size_t)h * E;
    float mx = -__int_as_float(0x7f800000);
    for (int s = threadIdx.x; s <= t; s += blockDim.x) {
        const float *ks = k + ((size_t)s * H + h) * E;
        float d = 0;
        for (int e = 0; e < E; e++) d += qh[e] * ks[e];
        p[s] = d * scale;
        mx = fmaxf(mx, p[s]);
    }
    red[threadIdx.x] = mx;
    __syncthreads();
    for (unsigned r = blockDim.x / 2; r > 0; r >>= 1) {
        if (threadIdx.x < r) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + r]);
        __syncthreads();
    }
    mx = red[0];
    double sum = 0;
    for (int s = threadIdx.x; s <= t; s += blockDim.x) { p[s] = expf(p[s] - mx); sum += p[s]; }   // (double exp spills at sm_90)
    sum = block_sum(sum);   // (its barriers also order p's writes before the reads below)
    for (int e = threadIdx.x; e < Ev; e += blockDim.x) {
        float acc = 0;
        for (int s = 0; s <= t; s++) acc += (float)(p[s] / sum) * v[((size_t)s * H + h) * Ev + e];
        y[(size_t)h * Ev + e] = so_round_%s(acc);
    }]], s.T, s.round))
  return s.launch(k, { ptr(s.row(n.out)), ptr(s.row(q)), ptr(s.rows(kk)), ptr(s.rows(v)), { "int", "t" }, { "int", H },
    { "int", E }, { "int", Ev }, { "float", s.lit(n.attrs.scale or 1 / math.sqrt(E)) } }, tostring(H), 256)
end
ops_cuda.step = step

-- what the rules above do not implement (checked by emit_cuda, which names the op and
-- the spec line): nil, or why not
ops_cuda.supported = function(node)
  local op = node.op
  -- a tensor whose batch dimension is not first: the ops the op table marks batch_anywhere
  -- take it (their sizes name B wherever it is); tensor.apply refuses the rest
  for _, x in pairs(node.inputs) do
    if not require("ops")[op].batch_anywhere and require("ops").batch_dim_inside(x.shape) then
      return "a tensor whose batch dimension is not first", true
    end
  end
  if (op == "transpose" or op == "permute") and #node.inputs[1].shape > MAXDIM then
    return string.format("a %d-d tensor (at most %d dims)", #node.inputs[1].shape, MAXDIM)
  end
  return nil
end

return ops_cuda
