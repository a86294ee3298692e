"""Shape inference against PyTorch: every module of gen/nn.lua and every
functional op of gen/tensor.lua, as small cases written twice — in loom's DSL and
in PyTorch.  For each case this script writes a one-model spec, runs
`$LOOM --dump=graph inspect SPEC`, reads the shape on the `return` line, puts a
concrete batch for B and compares it with the shape PyTorch computes.  A case with
modules also compares loom's model print with print(model).  Error cases must be
rejected by both: PyTorch raises, loom exits 2 with a `file:line:` message.

    LOOM=build/loom /usr/bin/python3 tests/torch/shape_cases.py [NAME_FILTER]

prints TAP-style lines: ok NAME / not ok NAME: why.
"""
import math
import os
import re
import subprocess
import sys
import tempfile
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH = 3
B = "B"


class Case:
    def __init__(self, name, inputs, lua, py, mods=(), error=False):
        self.name, self.inputs, self.lua, self.py = name, inputs, lua, py
        self.mods, self.error = list(mods), error


def f(*dims):
    """A float input; a leading B makes it a per-sample model input, otherwise
    it is a fixed (unbatched) tensor: in the spec, a LayerNorm's weight."""
    return ("float", dims)


def i(*dims, high=4):
    """An int64 input (indices in [0, high)); always batched."""
    assert dims[0] == B
    return ("int64", dims, high)


def M(name, lua, py):
    return (name, lua, py)


CASES = []


def case(*a, **k):
    CASES.append(Case(*a, **k))


def err(*a, **k):
    CASES.append(Case(*a, error=True, **k))


# torch 1.13 has no F.scaled_dot_product_attention: the reference, by hand
def sdpa(q, k, v, is_causal=False, scale=None):
    s = (q @ k.transpose(-2, -1)) * (scale if scale is not None else 1 / math.sqrt(q.size(-1)))
    if is_causal:
        mask = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool).tril()
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, -1) @ v


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(6)
        self.mlp = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 6))

    def forward(self, x):
        return x + self.mlp(self.ln(x))


# ---------------------------------------------------------------- modules
case("Linear_2d", [f(B, 5)], "m.l(a)", "m.l(a)", [M("l", "Linear(5, 4)", "nn.Linear(5, 4)")])
case("Linear_3d", [f(B, 6, 5)], "m.l(a)", "m.l(a)", [M("l", "Linear(5, 4)", "nn.Linear(5, 4)")])
case("Linear_4d_nobias", [f(B, 2, 6, 5)], "m.l(a)", "m.l(a)",
     [M("l", "Linear(5, 4, {bias = false})", "nn.Linear(5, 4, bias=False)")])
case("Conv2d_basic", [f(B, 3, 10, 12)], "m.c(a)", "m.c(a)", [M("c", "Conv2d(3, 8, 3)", "nn.Conv2d(3, 8, 3)")])
case("Conv2d_stride_pad_int", [f(B, 3, 11, 12)], "m.c(a)", "m.c(a)",
     [M("c", "Conv2d(3, 8, 3, {stride = 2, padding = 1})", "nn.Conv2d(3, 8, 3, stride=2, padding=1)")])
case("Conv2d_stride_pad_pair", [f(B, 3, 11, 13)], "m.c(a)", "m.c(a)",
     [M("c", "Conv2d(3, 8, {3, 5}, {stride = {2, 1}, padding = {1, 2}})",
        "nn.Conv2d(3, 8, (3, 5), stride=(2, 1), padding=(1, 2))")])
case("Conv2d_positional", [f(B, 3, 11, 12)], "m.c(a)", "m.c(a)",
     [M("c", "Conv2d(3, 5, 3, 2, 1)", "nn.Conv2d(3, 5, 3, 2, 1)")])
case("Conv2d_same_odd", [f(B, 4, 9, 9)], "m.c(a)", "m.c(a)",
     [M("c", 'Conv2d(4, 6, 5, {padding = "same"})', 'nn.Conv2d(4, 6, 5, padding="same")')])
case("Conv2d_same_even", [f(B, 4, 9, 10)], "m.c(a)", "m.c(a)",
     [M("c", 'Conv2d(4, 6, {4, 2}, {padding = "same"})', 'nn.Conv2d(4, 6, (4, 2), padding="same")')])
case("Conv2d_same_dilation", [f(B, 4, 9, 10)], "m.c(a)", "m.c(a)",
     [M("c", 'Conv2d(4, 6, 3, {padding = "same", dilation = 2})', 'nn.Conv2d(4, 6, 3, padding="same", dilation=2)')])
case("Conv2d_valid", [f(B, 4, 9, 10)], "m.c(a)", "m.c(a)",
     [M("c", 'Conv2d(4, 6, 3, {padding = "valid"})', 'nn.Conv2d(4, 6, 3, padding="valid")')])
case("Conv2d_dilation_pair", [f(B, 2, 15, 16)], "m.c(a)", "m.c(a)",
     [M("c", "Conv2d(2, 4, 3, {dilation = {2, 3}})", "nn.Conv2d(2, 4, 3, dilation=(2, 3))")])
case("Conv2d_groups", [f(B, 4, 8, 8)], "m.c(a)", "m.c(a)",
     [M("c", "Conv2d(4, 8, 3, {groups = 2})", "nn.Conv2d(4, 8, 3, groups=2)")])
case("Conv2d_depthwise_nobias", [f(B, 4, 8, 8)], "m.c(a)", "m.c(a)",
     [M("c", "Conv2d(4, 4, 3, {groups = 4, bias = false, padding = 1})", "nn.Conv2d(4, 4, 3, groups=4, bias=False, padding=1)")])
case("Conv2d_nonsquare_stride", [f(B, 1, 17, 19)], "m.c(a)", "m.c(a)",
     [M("c", "Conv2d(1, 2, {2, 4}, {stride = {3, 2}})", "nn.Conv2d(1, 2, (2, 4), stride=(3, 2))")])
case("MaxPool2d_2", [f(B, 3, 9, 9)], "m.p(a)", "m.p(a)", [M("p", "MaxPool2d(2)", "nn.MaxPool2d(2)")])
case("MaxPool2d_ceil", [f(B, 3, 9, 8)], "m.p(a)", "m.p(a)",
     [M("p", "MaxPool2d(2, {ceil_mode = true})", "nn.MaxPool2d(2, ceil_mode=True)")])
case("MaxPool2d_stride_pad", [f(B, 3, 10, 11)], "m.p(a)", "m.p(a)",
     [M("p", "MaxPool2d(3, {stride = 2, padding = 1})", "nn.MaxPool2d(3, stride=2, padding=1)")])
case("MaxPool2d_ceil_pad", [f(B, 2, 10, 11)], "m.p(a)", "m.p(a)",
     [M("p", "MaxPool2d(3, 2, 1, {ceil_mode = true})", "nn.MaxPool2d(3, 2, 1, ceil_mode=True)")])
case("MaxPool2d_ceil_last_window", [f(B, 1, 6, 7)], "m.p(a)", "m.p(a)",
     [M("p", "MaxPool2d(2, {stride = 3, ceil_mode = true})", "nn.MaxPool2d(2, stride=3, ceil_mode=True)")])
case("MaxPool2d_dilation", [f(B, 2, 9, 10)], "m.p(a)", "m.p(a)",
     [M("p", "MaxPool2d(3, {stride = 1, dilation = 2})", "nn.MaxPool2d(3, stride=1, dilation=2)")])
case("MaxPool2d_pair", [f(B, 2, 8, 9)], "m.p(a)", "m.p(a)",
     [M("p", "MaxPool2d({2, 3})", "nn.MaxPool2d((2, 3))")])
case("MaxPool2d_pair_stride_pad", [f(B, 2, 8, 9)], "m.p(a)", "m.p(a)",
     [M("p", "MaxPool2d({3, 2}, {1, 2}, {1, 0})", "nn.MaxPool2d((3, 2), (1, 2), (1, 0))")])
case("AvgPool2d_2", [f(B, 3, 9, 9)], "m.p(a)", "m.p(a)", [M("p", "AvgPool2d(2)", "nn.AvgPool2d(2)")])
case("AvgPool2d_ceil_pad", [f(B, 2, 10, 11)], "m.p(a)", "m.p(a)",
     [M("p", "AvgPool2d(3, {stride = 2, padding = 1, ceil_mode = true})", "nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True)")])
case("AvgPool2d_stride_pair", [f(B, 2, 7, 9)], "m.p(a)", "m.p(a)",
     [M("p", "AvgPool2d({3, 2}, {stride = {1, 2}})", "nn.AvgPool2d((3, 2), stride=(1, 2))")])
case("AvgPool2d_ceil_last_window", [f(B, 1, 6, 7)], "m.p(a)", "m.p(a)",
     [M("p", "AvgPool2d(2, {stride = 3, ceil_mode = true, count_include_pad = false})",
        "nn.AvgPool2d(2, stride=3, ceil_mode=True, count_include_pad=False)")])
case("BatchNorm1d_2d", [f(B, 5)], "m.bn(a)", "m.bn(a)", [M("bn", "BatchNorm1d(5)", "nn.BatchNorm1d(5)")])
case("BatchNorm1d_3d", [f(B, 5, 7)], "m.bn(a)", "m.bn(a)", [M("bn", "BatchNorm1d(5)", "nn.BatchNorm1d(5)")])
case("BatchNorm1d_options", [f(B, 5, 7)], "m.bn(a)", "m.bn(a)",
     [M("bn", "BatchNorm1d(5, {eps = 1e-3, momentum = false, affine = false})",
        "nn.BatchNorm1d(5, eps=1e-3, momentum=None, affine=False)")])
case("BatchNorm2d", [f(B, 4, 6, 5)], "m.bn(a)", "m.bn(a)", [M("bn", "BatchNorm2d(4)", "nn.BatchNorm2d(4)")])
case("BatchNorm2d_no_stats", [f(B, 4, 6, 5)], "m.bn(a)", "m.bn(a)",
     [M("bn", "BatchNorm2d(4, {momentum = 0.01, track_running_stats = false})",
        "nn.BatchNorm2d(4, momentum=0.01, track_running_stats=False)")])
case("LayerNorm_1", [f(B, 4, 6)], "m.ln(a)", "m.ln(a)", [M("ln", "LayerNorm(6)", "nn.LayerNorm(6)")])
case("LayerNorm_2", [f(B, 4, 6)], "m.ln(a)", "m.ln(a)", [M("ln", "LayerNorm({4, 6})", "nn.LayerNorm([4, 6])")])
case("LayerNorm_options", [f(B, 2, 6)], "m.ln(a)", "m.ln(a)",
     [M("ln", "LayerNorm(6, {eps = 1e-6, elementwise_affine = false})", "nn.LayerNorm(6, eps=1e-6, elementwise_affine=False)")])
case("Embedding_1d", [i(B)], "m.e(a)", "m.e(a)", [M("e", "Embedding(10, 4)", "nn.Embedding(10, 4)")])
case("Embedding_2d_padding", [i(B, 7)], "m.e(a)", "m.e(a)",
     [M("e", "Embedding(10, 4, {padding_idx = 0})", "nn.Embedding(10, 4, padding_idx=0)")])
case("Embedding_negative_padding", [i(B, 2, 7)], "m.e(a)", "m.e(a)",
     [M("e", "Embedding(10, 4, {padding_idx = -1})", "nn.Embedding(10, 4, padding_idx=-1)")])
case("Dropout", [f(B, 5, 4)], "m.d(a)", "m.d(a)", [M("d", "Dropout(0.25)", "nn.Dropout(0.25)")])
case("Dropout_default", [f(B, 5)], "m.d(a)", "m.d(a)", [M("d", "Dropout()", "nn.Dropout()")])
case("Flatten_default", [f(B, 2, 3, 4)], "m.fl(a)", "m.fl(a)", [M("fl", "Flatten()", "nn.Flatten()")])
case("Flatten_start_end", [f(B, 2, 3, 4, 5)], "m.fl(a)", "m.fl(a)", [M("fl", "Flatten(2, 3)", "nn.Flatten(2, 3)")])
case("Flatten_negative_end", [f(B, 2, 3, 4)], "m.fl(a)", "m.fl(a)",
     [M("fl", "Flatten({end_dim = -2})", "nn.Flatten(end_dim=-2)")])
case("ReLU", [f(B, 5)], "m.r(a)", "m.r(a)", [M("r", "ReLU()", "nn.ReLU()")])
case("ReLU_inplace", [f(B, 5)], "m.r(a)", "m.r(a)", [M("r", "ReLU(true)", "nn.ReLU(True)")])
case("GELU", [f(B, 2, 5)], "m.g(a)", "m.g(a)", [M("g", "GELU()", "nn.GELU()")])
case("GELU_tanh", [f(B, 2, 5)], "m.g(a)", "m.g(a)", [M("g", 'GELU {approximate = "tanh"}', 'nn.GELU(approximate="tanh")')])
case("SiLU", [f(B, 5)], "m.s(a)", "m.s(a)", [M("s", "SiLU({inplace = true})", "nn.SiLU(inplace=True)")])
case("Sigmoid", [f(B, 5)], "m.s(a)", "m.s(a)", [M("s", "Sigmoid()", "nn.Sigmoid()")])
case("Tanh", [f(B, 5)], "m.t(a)", "m.t(a)", [M("t", "Tanh()", "nn.Tanh()")])
case("Softmax_dim1", [f(B, 4, 5)], "m.s(a)", "m.s(a)", [M("s", "Softmax(1)", "nn.Softmax(1)")])
case("Softmax_dim_neg", [f(B, 4, 5)], "m.s(a)", "m.s(a)", [M("s", "Softmax({dim = -1})", "nn.Softmax(dim=-1)")])
case("Sequential", [f(B, 1, 6, 6)], "m.net(a)", "m.net(a)",
     [M("net", "Sequential { Conv2d(1, 4, 3), ReLU(), MaxPool2d(2), Flatten(), Linear(16, 3), Dropout(0.1) }",
        "nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3), nn.Dropout(0.1))")])

case("Linear_1d_unbatched", [f(B, 1), f(5)], "m.l(b)", "m.l(b)", [M("l", "Linear(5, 4)", "nn.Linear(5, 4)")])
case("Dropout_int_p", [f(B, 5)], "m.d(a)", "m.d(a)", [M("d", "Dropout(0)", "nn.Dropout(0)")])
case("BatchNorm1d_int_momentum", [f(B, 5)], "m.bn(a)", "m.bn(a)",
     [M("bn", "BatchNorm1d(5, 1e-3, 0)", "nn.BatchNorm1d(5, 1e-3, 0)")])
case("ModuleList", [f(B, 6)], "m.layers[2](m.layers[1](a))", "m.layers[1](m.layers[0](a))",
     [M("layers", "ModuleList { Linear(6, 5), Linear(5, 4) }", "nn.ModuleList([nn.Linear(6, 5), nn.Linear(5, 4)])")])
case("ModuleDict", [f(B, 6)], "m.heads.out(m.heads.hidden(a))", "m.heads['out'](m.heads['hidden'](a))",
     [M("heads", "ModuleDict { hidden = Linear(6, 5), out = Linear(5, 2) }",
        "nn.ModuleDict({'hidden': nn.Linear(6, 5), 'out': nn.Linear(5, 2)})")])
case("Module_nested", [f(B, 4, 6)], "m.blk(a)", "m.blk(a)",
     [M("blk", 'Module "Block" { ln = LayerNorm(6), mlp = Sequential { Linear(6, 8), GELU(), Linear(8, 6) }, '
               'forward = function(m, x) return x + m.mlp(m.ln(x)) end }', "Block()")])
case("Module_inline_list_and_dict", [f(B, 6)], "m.fcs[2](m.acts.r(m.fcs[1](a)))", "m.fcs[1](m.acts['r'](m.fcs[0](a)))",
     [M("fcs", "{ Linear(6, 5), Linear(5, 2) }", "nn.ModuleList([nn.Linear(6, 5), nn.Linear(5, 2)])"),
      M("acts", "{ r = ReLU() }", "nn.ModuleDict({'r': nn.ReLU()})")])

# ---------------------------------------------------------------- functional
case("cat_dim1", [f(B, 2, 5), f(B, 3, 5)], "cat{a, b}", "torch.cat([a, b], 1)")
case("cat_dim2", [f(B, 4, 2), f(B, 4, 3)], "cat({a, b}, 2)", "torch.cat([a, b], 2)")
case("cat_neg_three", [f(B, 4, 2), f(B, 4, 3), f(B, 4, 1)], "cat({a, b, c}, -1)", "torch.cat([a, b, c], -1)")
case("cat_unbatched_dim0", [f(B, 1), f(2, 5), f(3, 5)], "cat({b, c}, 0)", "torch.cat([b, c], 0)")
case("add_same", [f(B, 4, 5), f(B, 4, 5)], "a + b", "a + b")
case("sub_scalar_tensor", [f(B, 4, 5)], "a - mean(a)", "a - a.mean()")
case("add_broadcast_trailing", [f(B, 4, 5), f(5)], "a + b", "a + b")
case("add_broadcast_both", [f(B, 1, 5), f(B, 4, 1)], "add(a, b)", "torch.add(a, b)")
case("sub_scalar", [f(B, 4)], "a - 1.5", "a - 1.5")
case("sub_scalar_left", [f(B, 4)], "2 - a", "2 - a")
case("mul_broadcast_unbatched", [f(B, 4, 1), f(4, 5)], "a * b", "a * b")
case("mul_rank_extend", [f(B, 2, 4, 5), f(B, 1, 1, 5)], "mul(a, b)", "torch.mul(a, b)")
case("div_tensor_scalar", [f(B, 4, 5), f(B, 4, 5)], "a / b / 2", "a / b / 2")
case("neg", [f(B, 4)], "-a", "-a")
case("matmul_1d_1d", [f(B, 1), f(5), f(5)], "matmul(b, c)", "torch.matmul(b, c)")
case("matmul_2d_2d", [f(B, 1), f(4, 5), f(5, 6)], "matmul(b, c)", "b @ c")
case("matmul_batched", [f(B, 4, 5), f(B, 5, 6)], "matmul(a, b)", "a @ b")
case("matmul_broadcast_2d", [f(B, 4, 5), f(5, 6)], "matmul(a, b)", "a @ b")
case("matmul_broadcast_batch", [f(B, 1, 4, 5), f(2, 5, 6)], "a:matmul(b)", "a.matmul(b)")
case("matmul_1d_left", [f(B, 5, 6), f(5)], "matmul(b, a)", "b @ a")
case("matmul_1d_right", [f(B, 4, 5), f(5)], "matmul(a, b)", "a @ b")
case("reshape_neg1", [f(B, 20)], "reshape(a, -1, 4, 5)", "a.reshape(-1, 4, 5)")
case("view_list", [f(B, 4, 5)], "a:view({-1, 2, 10})", "a.view(-1, 2, 10)")
case("view_size0", [f(B, 4, 5)], "a:view(a:size(0), -1)", "a.view(a.size(0), -1)")
case("reshape_size0_explicit", [f(B, 4, 5)], "reshape(a, a:size(0), 2, 10)", "a.reshape(a.size(0), 2, 10)")
case("reshape_unbatched", [f(B, 1), f(4, 6)], "reshape(b, 3, -1)", "b.reshape(3, -1)")
case("flatten_fn", [f(B, 2, 3, 4)], "flatten(a, 1)", "torch.flatten(a, 1)")
case("flatten_fn_range", [f(B, 2, 3, 4)], "a:flatten(1, 2)", "a.flatten(1, 2)")
case("flatten_fn_unbatched", [f(B, 1), f(2, 3, 4)], "flatten(b)", "torch.flatten(b)")
case("transpose", [f(B, 2, 3, 4)], "transpose(a, 1, 3)", "a.transpose(1, 3)")
case("transpose_neg", [f(B, 2, 3, 4)], "a:transpose(-1, -2)", "a.transpose(-1, -2)")
case("transpose_batch", [f(B, 2, 4)], "transpose(a, 0, 1)", "a.transpose(0, 1)")
case("permute", [f(B, 2, 3, 4)], "permute(a, 0, 3, 1, 2)", "a.permute(0, 3, 1, 2)")
case("permute_list_neg", [f(B, 2, 3, 4)], "a:permute({0, -1, 1, 2})", "a.permute(0, -1, 1, 2)")
case("sum_dim", [f(B, 4, 5)], "sum(a, 1)", "a.sum(1)")
case("sum_dim_keepdim", [f(B, 4, 5)], "sum(a, -1, true)", "a.sum(-1, keepdim=True)")
case("sum_dims_list", [f(B, 2, 4, 5)], "a:sum({1, 3})", "a.sum((1, 3))")
case("sum_all", [f(B, 4, 5)], "sum(a)", "a.sum()")
case("sum_batch", [f(B, 4, 5)], "sum(a, 0)", "a.sum(0)")
case("mean_dims_keepdim", [f(B, 2, 4, 5)], "mean(a, {-1, 1}, true)", "a.mean((-1, 1), keepdim=True)")
case("sum_empty_list_keepdim", [f(B, 4, 5)], "sum(a, {}, true)", "a.sum([], keepdim=True)")
case("mean_all", [f(B, 4, 5)], "a:mean()", "a.mean()")
case("mean_dim", [f(B, 4, 5)], "mean(a, 2)", "a.mean(2)")
case("slice_negative_stop", [f(B, 6, 5)], "slice(a, 1, 1, -1)", "a[:, 1:-1]")
case("slice_open_step", [f(B, 6, 5)], "slice(a, 2, nil, nil, 2)", "a[:, :, ::2]")
case("slice_negative_start", [f(B, 6, 5)], "slice(a, -1, -3)", "a[..., -3:]")
case("slice_clamped", [f(B, 6, 5)], "slice(a, 1, 2, 100)", "a[:, 2:100]")
case("slice_clamped_start", [f(B, 6, 5)], "slice(a, 1, -100, 2)", "a[:, -100:2]")
case("slice_step3", [f(B, 7, 5)], "a:slice(1, 1, nil, 3)", "a[:, 1::3]")
case("narrow", [f(B, 6, 5)], "narrow(a, 1, 1, 2)", "a.narrow(1, 1, 2)")
case("narrow_negative", [f(B, 6, 5)], "a:narrow(-1, -3, 2)", "a.narrow(-1, -3, 2)")
case("softmax_fn", [f(B, 4, 5)], "softmax(a, 1)", "F.softmax(a, 1)")
case("softmax_method", [f(B, 4, 5)], "a:softmax(-1)", "a.softmax(-1)")
case("log_softmax", [f(B, 4, 5)], "log_softmax(a, -1)", "F.log_softmax(a, -1)")
case("activations_fn", [f(B, 4, 5)], "tanh(sigmoid(silu(relu(gelu(a, 'tanh')))))",
     "torch.tanh(torch.sigmoid(F.silu(F.relu(F.gelu(a, approximate='tanh')))))")
case("sdpa", [f(B, 2, 5, 8), f(B, 2, 7, 8), f(B, 2, 7, 6)],
     "scaled_dot_product_attention(a, b, c)", "sdpa(a, b, c)")
case("sdpa_causal_3d", [f(B, 5, 8), f(B, 5, 8), f(B, 5, 8)],
     "scaled_dot_product_attention(a, b, c, {is_causal = true, scale = 0.5})", "sdpa(a, b, c, is_causal=True, scale=0.5)")
case("cross_entropy_NC", [f(B, 5), i(B)], "cross_entropy(a, b)", "F.cross_entropy(a, b)")
case("cross_entropy_NC_none", [f(B, 5), i(B)], "cross_entropy(a, b, {reduction = 'none'})",
     "F.cross_entropy(a, b, reduction='none')")
case("cross_entropy_NC_sum", [f(B, 5), i(B)], "cross_entropy(a, b, {reduction = 'sum'})",
     "F.cross_entropy(a, b, reduction='sum')")
case("cross_entropy_NCd_none", [f(B, 5, 7), i(B, 7)], "cross_entropy(a, b, {reduction = 'none'})",
     "F.cross_entropy(a, b, reduction='none')")
case("cross_entropy_NCd_mean", [f(B, 5, 7, 2), i(B, 7, 2)], "cross_entropy(a, b, {label_smoothing = 0.1})",
     "F.cross_entropy(a, b, label_smoothing=0.1)")
case("cross_entropy_probs_none", [f(B, 5), f(B, 5)], "cross_entropy(a, softmax(b, 1), {reduction = 'none'})",
     "F.cross_entropy(a, F.softmax(b, 1), reduction='none')")
case("bce_mean", [f(B, 5), f(B, 5)], "bce(sigmoid(a), sigmoid(b))", "F.binary_cross_entropy(torch.sigmoid(a), torch.sigmoid(b))")
case("bce_none", [f(B, 5), f(B, 5)], "binary_cross_entropy(sigmoid(a), sigmoid(b), {reduction = 'none'})",
     "F.binary_cross_entropy(torch.sigmoid(a), torch.sigmoid(b), reduction='none')")
case("bce_with_logits_sum", [f(B, 5, 2), f(B, 5, 2)], "bce_with_logits(a, sigmoid(b), {reduction = 'sum'})",
     "F.binary_cross_entropy_with_logits(a, torch.sigmoid(b), reduction='sum')")
case("mse_none", [f(B, 5), f(B, 5)], "mse_loss(a, b, {reduction = 'none'})", "F.mse_loss(a, b, reduction='none')")
case("mse_mean", [f(B, 5), f(B, 5)], "mse(a, b)", "F.mse_loss(a, b)")
case("l1_sum", [f(B, 5, 3), f(B, 5, 3)], "l1_loss(a, b, {reduction = 'sum'})", "F.l1_loss(a, b, reduction='sum')")
# added DSL pieces
case("unsqueeze", [f(B, 4, 5)], "unsqueeze(a, 1)", "a.unsqueeze(1)")
case("unsqueeze_end", [f(B, 4, 5)], "a:unsqueeze(-1)", "a.unsqueeze(-1)")
case("unsqueeze_front_unbatched", [f(B, 1), f(4, 5)], "unsqueeze(b, 0)", "b.unsqueeze(0)")
case("squeeze_dim", [f(B, 4, 1, 5)], "squeeze(a, 2)", "a.squeeze(2)")
case("squeeze_dim_noop", [f(B, 4, 1, 5)], "a:squeeze(1)", "a.squeeze(1)")
case("squeeze_all", [f(B, 1, 4, 1)], "squeeze(a)", "a.squeeze()")   # B is never 1 here
case("t_2d", [f(B, 1), f(4, 5)], "b:t()", "b.t()")
case("t_batched", [f(B, 5)], "a:t()", "a.t()")
case("t_1d", [f(B, 1), f(5)], "b:t()", "b.t()")
case("split_size", [f(B, 6, 5)], "select(2, split(a, 4, 1))", "torch.split(a, 4, 1)[1]")
case("split_qkv", [f(B, 7, 12)], "select(3, a:split(4, -1))", "a.split(4, -1)[2]")
case("chunk", [f(B, 7, 12)], "select(2, chunk(a, 3, 1))", "a.chunk(3, 1)[1]")
case("chunk_uneven", [f(B, 7, 12)], "select(3, a:chunk(3, 1))", "a.chunk(3, 1)[2]")
case("size_and_dim", [f(B, 4, 6)], "reshape(a, -1, a:size(1) * 2, a:size(-1) // 2, a:dim() - 2)",
     "a.reshape(-1, a.size(1) * 2, a.size(-1) // 2, a.dim() - 2)")

# ---------------------------------------------------------------- errors
err("err_Linear_features", [f(B, 4)], "m.l(a)", "m.l(a)", [M("l", "Linear(5, 3)", "nn.Linear(5, 3)")])
err("err_Conv2d_channels", [f(B, 4, 10, 10)], "m.c(a)", "m.c(a)", [M("c", "Conv2d(3, 8, 3)", "nn.Conv2d(3, 8, 3)")])
err("err_Conv2d_too_small", [f(B, 3, 4, 4)], "m.c(a)", "m.c(a)", [M("c", "Conv2d(3, 8, 5)", "nn.Conv2d(3, 8, 5)")])
err("err_Conv2d_3d_input", [f(B, 4, 6)], "m.c(a)", "m.c(a)", [M("c", "Conv2d(4, 8, 3)", "nn.Conv2d(4, 8, 3)")])
err("err_MaxPool2d_padding", [f(B, 3, 8, 8)], "m.p(a)", "m.p(a)",
    [M("p", "MaxPool2d(2, {padding = 2})", "nn.MaxPool2d(2, padding=2)")])
err("err_MaxPool2d_too_small", [f(B, 3, 2, 8)], "m.p(a)", "m.p(a)", [M("p", "MaxPool2d(3)", "nn.MaxPool2d(3)")])
err("err_BatchNorm2d_2d_input", [f(B, 4)], "m.bn(a)", "m.bn(a)", [M("bn", "BatchNorm2d(4)", "nn.BatchNorm2d(4)")])
err("err_BatchNorm1d_features", [f(B, 5)], "m.bn(a)", "m.bn(a)", [M("bn", "BatchNorm1d(4)", "nn.BatchNorm1d(4)")])
err("err_LayerNorm_shape", [f(B, 5)], "m.ln(a)", "m.ln(a)", [M("ln", "LayerNorm(6)", "nn.LayerNorm(6)")])
err("err_Embedding_float", [f(B, 5)], "m.e(a)", "m.e(a)", [M("e", "Embedding(10, 4)", "nn.Embedding(10, 4)")])
err("err_cat_sizes", [f(B, 4, 5), f(B, 3, 6)], "cat{a, b}", "torch.cat([a, b], 1)")
err("err_cat_ndim", [f(B, 4, 5), f(B, 4)], "cat{a, b}", "torch.cat([a, b], 1)")
err("err_add_broadcast", [f(B, 4), f(B, 5)], "a + b", "a + b")
err("err_matmul_inner", [f(B, 4, 5), f(B, 6, 7)], "matmul(a, b)", "a @ b")
err("err_reshape_numel", [f(B, 12)], "reshape(a, -1, 5)", "a.reshape(-1, 5)")
err("err_transpose_dim", [f(B, 4)], "transpose(a, 0, 2)", "a.transpose(0, 2)")
err("err_permute_count", [f(B, 4, 5)], "permute(a, 0, 2)", "a.permute(0, 2)")
err("err_permute_repeat", [f(B, 4, 5)], "permute(a, 0, 2, 2)", "a.permute(0, 2, 2)")
err("err_softmax_dim", [f(B, 4)], "softmax(a, 2)", "F.softmax(a, 2)")
err("err_sum_dim", [f(B, 4)], "sum(a, -3)", "a.sum(-3)")
err("err_sum_repeated_dim", [f(B, 4, 5)], "sum(a, {1, -2})", "a.sum((1, -2))")
err("err_flatten_order", [f(B, 2, 3, 4)], "flatten(a, 2, 1)", "torch.flatten(a, 2, 1)")
err("err_narrow_past_end", [f(B, 4)], "narrow(a, 1, 2, 5)", "a.narrow(1, 2, 5)")
err("err_slice_step", [f(B, 4)], "slice(a, 1, 0, 4, 0)", "a[:, 0:4:0]")
err("err_cross_entropy_target", [f(B, 5), i(B, 2)], "cross_entropy(a, b)", "F.cross_entropy(a, b)")
err("err_bce_shape", [f(B, 5), f(B, 1)], "bce(sigmoid(a), sigmoid(b))", "F.binary_cross_entropy(torch.sigmoid(a), torch.sigmoid(b))")
err("err_sdpa_kv_length", [f(B, 2, 5, 8), f(B, 2, 7, 8), f(B, 2, 6, 8)],
    "scaled_dot_product_attention(a, b, c)", "sdpa(a, b, c)")
err("err_unsqueeze_dim", [f(B, 4)], "unsqueeze(a, 3)", "a.unsqueeze(3)")
err("err_t_3d", [f(B, 4, 5)], "a:t()", "a.t()")
err("err_Conv2d_same_strided", [f(B, 4, 8, 8)], "m.c(a)", "m.c(a)",
    [M("c", 'Conv2d(4, 6, 3, {padding = "same", stride = 2})', 'nn.Conv2d(4, 6, 3, padding="same", stride=2)')])
err("err_split_sections", [f(B, 4, 5)], "select(1, split(a, {2, 3}, 1))", "a.split([2, 3], 1)[0]")
err("err_Conv2d_groups", [f(B, 4, 8, 8)], "m.c(a)", "m.c(a)", [M("c", "Conv2d(4, 6, 3, {groups = 4})", "nn.Conv2d(4, 6, 3, groups=4)")])


# ---------------------------------------------------------------- the harness
def lua_dims(dims):
    return ", ".join(str(d) for d in dims)


def spec_text(c):
    lines = ['model "M" {']
    decls, holders, names = [], [], []
    for k, inp in enumerate(c.inputs):
        name = "abcdefgh"[k]
        names.append(name)
        dt, dims = inp[0], inp[1]
        if dims and dims[0] == B:
            rest = dims[1:]
            if dt == "int64":
                decls.append("%s = Tensor{%s}" % (name, ", ".join([lua_dims(rest)] * bool(rest) + ['dtype = "int64"'])))
            else:
                decls.append("%s = Tensor{%s}" % (name, lua_dims(rest)))
        else:
            holders.append((name, dims))
    lines.append("  inputs = { %s }," % ", ".join(decls))
    for mname, lua, _ in c.mods:
        lines.append("  %s = %s," % (mname, lua))
    for name, dims in holders:
        lines.append("  p_%s = LayerNorm({%s}),   -- a fixed tensor %s" % (name, lua_dims(dims), name))
    lines.append("  forward = function(m, x)")
    vals = []
    for k, inp in enumerate(c.inputs):
        dims = inp[1]
        vals.append("x." + names[k] if dims and dims[0] == B else "m.p_%s.weight" % names[k])
    lines.append("    local %s = %s" % (", ".join(names), ", ".join(vals)))
    lines.append("    return %s" % c.lua)
    lines.append("  end,")
    lines.append("}")
    return "\n".join(lines) + "\n", len(lines) - 2   # the line of the return


def torch_model(c):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            for mname, _, py in c.mods:
                setattr(self, mname, eval(py, {"nn": nn, "Block": Block}))
            for k, inp in enumerate(c.inputs):
                dims = inp[1]
                if not (dims and dims[0] == B):
                    setattr(self, "p_" + "abcdefgh"[k], nn.LayerNorm(list(dims)))
    return M()


def torch_run(c, model):
    env = {"torch": torch, "nn": nn, "F": F, "sdpa": sdpa, "m": model, "Block": Block}
    for k, inp in enumerate(c.inputs):
        dims = inp[1]
        shape = tuple(BATCH if d == B else d for d in dims)
        if inp[0] == "int64":
            v = torch.randint(0, inp[2], shape)
        elif dims and dims[0] == B:
            v = torch.randn(shape)
        else:
            v = torch.randn(shape)
        env["abcdefgh"[k]] = v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return eval(c.py, env)


def loom_run(loom, path, *args):
    p = subprocess.run([loom, *args, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p.returncode, p.stdout, p.stderr


def shape_of_return(dump):
    m = re.search(r"^  return %\d+ \(([^)]*)\)", dump, re.M)
    if not m:
        return None
    dims = [d.strip() for d in m.group(1).split(",") if d.strip()]
    return tuple(BATCH if d == "B" else int(d) for d in dims)


def run_case(c, loom, tmpdir):
    path = os.path.join(tmpdir, c.name + ".lua")
    text, ret_line = spec_text(c)
    with open(path, "w") as fh:
        fh.write(text)
    torch.manual_seed(0)
    results = []
    if c.error:
        rc, out, errtext = loom_run(loom, path, "--dump=graph", "inspect")
        try:
            model = torch_model(c)
            val = torch_run(c, model)
            torch_err = None
        except (RuntimeError, ValueError, IndexError) as e:
            torch_err = str(e).splitlines()[0]
        if torch_err is None:
            results.append((False, "PyTorch accepts it (output %s): not an error case" % (tuple(val.shape),)))
        elif rc != 2:
            results.append((False, "loom exits %d (want 2)%s" % (rc, ": " + (errtext or out).strip().replace("\n", " | ")[:300])))
        elif not re.match(re.escape(path) + r":\d+: ", errtext):
            results.append((False, "loom's message has no file:line: %s" % errtext.strip().replace("\n", " | ")[:300]))
        else:
            results.append((True, "%s  | torch: %s" % (errtext.splitlines()[0].replace(path, c.name + ".lua"), torch_err[:120])))
        return [("shape_" + c.name,) + r for r in results]
    rc, out, errtext = loom_run(loom, path, "--dump=graph", "inspect")
    model = torch_model(c)
    want = tuple(torch_run(c, model).shape)
    if rc != 0:
        results.append(("shape_" + c.name, False, "loom exits %d: %s (torch: %s)" % (
            rc, errtext.strip().replace("\n", " | ")[:300], want)))
    else:
        got = shape_of_return(out)
        if got == want:
            results.append(("shape_" + c.name, True, ""))
        else:
            results.append(("shape_" + c.name, False, "loom %s vs torch %s" % (got, want)))
    if c.mods and rc != 0:
        results.append(("print_" + c.name, False, "not compared: loom exits %d" % rc))
    elif c.mods:
        rc2, out2, err2 = loom_run(loom, path, "inspect")
        loom_print = out2.split("\n\n", 1)[0]
        if loom_print == str(model):
            results.append(("print_" + c.name, True, ""))
        else:
            results.append(("print_" + c.name, False, "loom prints %r, torch %r" % (loom_print, str(model))))
    return results


def main():
    loom = os.path.abspath(os.environ.get("LOOM", "build/loom"))
    pattern = sys.argv[1] if len(sys.argv) > 1 else ""
    names = set()
    for c in CASES:
        assert c.name not in names, "duplicate case " + c.name
        names.add(c.name)
    chosen = [c for c in CASES if pattern in c.name]
    # the plan: a shape result for each case, and a print result for each valid case
    # with modules (tests/run_all.sh fails a run that prints a different number)
    print("1..%d" % sum(1 + (1 if c.mods and not c.error else 0) for c in chosen))
    with tempfile.TemporaryDirectory() as tmpdir:
        for c in chosen:
            for name, ok, why in run_case(c, loom, tmpdir):
                if ok:
                    print("ok %s%s" % (name, ("  # " + why) if False else ""))
                    if why:
                        print("#   " + why)
                else:
                    print("not ok %s: %s" % (name, why))
    nvalid = sum(1 for c in CASES if not c.error)
    print("# %d shape cases, %d error cases" % (nvalid, len(CASES) - nvalid))


if __name__ == "__main__":
    main()
