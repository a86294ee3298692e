"""Reference values from PyTorch for tests/test_kernels_torch.c: fixed inputs, the
outputs and gradients PyTorch computes from them, in float64.

    /usr/bin/python3 tests/torch/kernels_ref.py OUT

writes OUT as lines "NAME COUNT V1 V2 ..." (%.17g).  tests/torch/ref.sh runs it where
torch is installed (and writes the "skip REASON" line the C tests skip with where it is
not); a torch that is installed but does not import is an error here, not a skip.
Cases cover the semantics a gradient check cannot see: that the forward is
PyTorch's (conv weight layout, groups, dilation, pooling windows with ceil_mode,
count_include_pad, cross entropy's ignore_index and label smoothing, batch norm's
running statistics, the optimizers' exact update rules, clip_grad_norm_).
"""
import sys
import warnings

warnings.filterwarnings("ignore")

out_path = sys.argv[1]
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_default_dtype(torch.float64)
torch.manual_seed(0)
lines = []


def put(name, t):
    t = torch.as_tensor(t).detach().reshape(-1).to(torch.float64)
    lines.append(name + " " + str(t.numel()) + "".join(" %.17g" % v for v in t.tolist()))


def rand(*shape, lo=-1.0, hi=1.0):
    return torch.rand(*shape) * (hi - lo) + lo


def fwd_bwd(name, f, inputs, extra=None):
    """put inputs, output, dout (random) and the gradient of each input"""
    xs = [x.clone().requires_grad_(True) for x in inputs]
    y = f(*xs)
    dy = rand(*y.shape)
    y.backward(dy)
    for i, x in enumerate(inputs):
        put(f"{name}.x{i}", x)
    put(f"{name}.y", y)
    put(f"{name}.dy", dy)
    for i, x in enumerate(xs):
        put(f"{name}.dx{i}", x.grad)


# conv2d: groups, stride, dilation, padding; and "same" with an even kernel (asymmetric)
fwd_bwd("conv_a", lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2),
        [rand(2, 4, 7, 6), rand(6, 2, 3, 2), rand(6)])
fwd_bwd("conv_same", lambda x, w, b: F.conv2d(x, w, b, padding="same"), [rand(2, 3, 5, 6), rand(4, 3, 2, 4), rand(4)])

# pooling
fwd_bwd("maxpool_ceil", lambda x: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True), [rand(2, 2, 8, 7)])
fwd_bwd("maxpool_dil", lambda x: F.max_pool2d(x, (2, 3), stride=(2, 1), padding=(1, 1), dilation=(2, 2), ceil_mode=True),
        [rand(1, 2, 7, 9)])
for cip in (True, False):
    fwd_bwd(f"avgpool_cip{int(cip)}", lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=cip),
            [rand(2, 2, 8, 7)])

# activations
x = rand(50, lo=-4, hi=4)
fwd_bwd("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), [x])
fwd_bwd("gelu", lambda x: F.gelu(x), [x])
fwd_bwd("silu", F.silu, [x])

# linear, layer norm, softmax over a middle dim
fwd_bwd("linear", F.linear, [rand(5, 7), rand(3, 7), rand(3)])
fwd_bwd("layer_norm", lambda x, w, b: F.layer_norm(x, (6,), w, b, 1e-5), [rand(4, 6), rand(6), rand(6)])
fwd_bwd("log_softmax", lambda x: F.log_softmax(x, dim=1), [rand(2, 5, 3, lo=-3, hi=3)])

# cross entropy (N, C, S) with class indices: ignore_index (-100 and a real class), label smoothing, reductions
logits = rand(4, 5, 3, lo=-2, hi=2)
target = torch.tensor([[1, -100, 4], [0, 2, -100], [3, 3, 1], [-100, 0, 2]])
put("ce.logits", logits)
put("ce.target", target)
for ii, ignore in enumerate((-100, 2)):
    t = target.clone()
    if ignore != -100:
        t[t == -100] = ignore
    for ls in (0.0, 0.1):
        for red in ("none", "mean", "sum"):
            name = f"ce.i{ii}.ls{int(ls * 10)}.{red}"
            x = logits.clone().requires_grad_(True)
            loss = F.cross_entropy(x, t, ignore_index=ignore, label_smoothing=ls, reduction=red)
            dl = rand(*loss.shape) if red == "none" else torch.tensor(0.7)
            loss.backward(dl)
            put(name + ".loss", loss)
            put(name + ".dloss", dl)
            put(name + ".dlogits", x.grad)
# probability targets
probs = torch.softmax(rand(4, 5, 3, lo=-2, hi=2), dim=1)
put("ces.target", probs)
for red in ("none", "mean", "sum"):
    x = logits.clone().requires_grad_(True)
    loss = F.cross_entropy(x, probs, label_smoothing=0.2, reduction=red)
    dl = rand(*loss.shape) if red == "none" else torch.tensor(0.7)
    loss.backward(dl)
    put(f"ces.{red}.loss", loss)
    put(f"ces.{red}.dloss", dl)
    put(f"ces.{red}.dlogits", x.grad)

# bce: probabilities including exact 0 and 1 (log clamped at -100)
p = torch.tensor([0.0, 1.0, 0.3, 0.9, 1e-50, 0.5])
tg = torch.tensor([0.0, 1.0, 1.0, 0.2, 1.0, 0.5])
put("bce.p", p)
put("bce.t", tg)
put("bce.mean", F.binary_cross_entropy(p, tg))
put("bce.none", F.binary_cross_entropy(p, tg, reduction="none"))
pg = torch.tensor([0.1, 0.3, 0.9, 0.5]).requires_grad_(True)
F.binary_cross_entropy(pg, torch.tensor([0.0, 1.0, 0.2, 0.5])).backward()
put("bce.grad", pg.grad)
z = torch.tensor([-50.0, -3.0, 0.0, 2.0, 40.0])
put("bcel.x", z)
put("bcel.t", torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0]))
put("bcel.none", F.binary_cross_entropy_with_logits(z, torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0]), reduction="none"))

# batch norm: running stats after 3 training steps, momentum 0.1 and None (cumulative)
for mname, mom in (("m01", 0.1), ("mnone", None)):
    bn = torch.nn.BatchNorm1d(3, momentum=mom)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, 0.5, -1.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    for step in range(3):
        x = rand(4, 3, 5, lo=-2, hi=3) + step
        y = bn(x)
        put(f"bn.{mname}.x{step}", x)
        put(f"bn.{mname}.y{step}", y)
    put(f"bn.{mname}.running_mean", bn.running_mean)
    put(f"bn.{mname}.running_var", bn.running_var)
    put(f"bn.{mname}.nbt", bn.num_batches_tracked)
    bn.eval()
    x = rand(2, 3, 5)
    put(f"bn.{mname}.eval_x", x)
    put(f"bn.{mname}.eval_y", bn(x))

# optimizers: 4 steps from the same start with fixed gradients
p0 = rand(7)
grads = [rand(7) for _ in range(4)]
put("opt.p0", p0)
for i, g in enumerate(grads):
    put(f"opt.g{i}", g)
cfgs = {
    "sgd_plain": (torch.optim.SGD, dict(lr=0.1)),
    "sgd_mom": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.05)),
    "sgd_nest": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05, maximize=True)),
    "adam": (torch.optim.Adam, dict(lr=0.01)),
    "adam_all": (torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1, amsgrad=True, maximize=True)),
    "adamw": (torch.optim.AdamW, dict(lr=0.01)),
    "adamw_all": (torch.optim.AdamW, dict(lr=0.01, betas=(0.85, 0.95), eps=1e-7, weight_decay=0.3, amsgrad=True)),
}
for name, (cls, kw) in cfgs.items():
    p = p0.clone().requires_grad_(True)
    opt = cls([p], **kw)
    for i, g in enumerate(grads):
        p.grad = g.clone()
        opt.step()
        put(f"opt.{name}.p{i}", p)

# clip_grad_norm_ over two tensors, and clip_grad_value_
for mx in (0.5, 100.0):
    a, b = torch.nn.Parameter(rand(5)), torch.nn.Parameter(rand(3, 2))
    a.grad, b.grad = rand(5), rand(3, 2)
    put(f"clip{mx:g}.ga", a.grad)
    put(f"clip{mx:g}.gb", b.grad)
    total = torch.nn.utils.clip_grad_norm_([a, b], mx)
    put(f"clip{mx:g}.total", total)
    put(f"clip{mx:g}.a", a.grad)
    put(f"clip{mx:g}.b", b.grad)
a = torch.nn.Parameter(rand(6))
a.grad = rand(6, lo=-2, hi=2)
put("clipv.g", a.grad)
torch.nn.utils.clip_grad_value_([a], 0.5)
put("clipv.out", a.grad)

with open(out_path, "w") as f:
    f.write("\n".join(lines) + "\n")
