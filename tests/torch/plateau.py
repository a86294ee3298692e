"""Compares a loom program's ReduceLROnPlateau with torch's, stepped on the same metrics:

    /usr/bin/python3 tests/torch/plateau.py METRICS_CSV 'factor = 0.5, patience = 1, ...'

The settings are the spec's ReduceLROnPlateau { ... } (monitor defaults to val/loss).
metrics.csv's step rows give the lr each epoch trained with; its epoch rows the metric.
torch.optim.lr_scheduler.ReduceLROnPlateau (SGD, lr 0.1) is stepped once per epoch on
that metric; every epoch's lr must agree to 1e-12.  Prints "ok" or "not ok: why".
"""
import csv
import sys

import torch

path, settings = sys.argv[1], sys.argv[2]
kw = {}
for part in settings.split(","):
    k, v = (x.strip() for x in part.split("="))
    kw[k] = eval(v)
monitor = kw.pop("monitor", "val/loss")
metric = {"val/loss": "val/loss", "train/loss": "train/loss_epoch"}[monitor]
lr_of, value_of = {}, {}
for r in csv.DictReader(open(path)):
    e = int(r["epoch"])
    if r["lr-SGD"]:
        lr_of.setdefault(e, set()).add(float(r["lr-SGD"]))
    if r.get(metric):
        value_of[e] = float(r[metric])
p = torch.nn.Parameter(torch.zeros(1))
opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
worst, changes = 0.0, 0
for e in sorted(lr_of):
    want = opt.param_groups[0]["lr"]
    if len(lr_of[e]) != 1:
        print("not ok: epoch %d trained with several lr %s" % (e, sorted(lr_of[e])))
        sys.exit(1)
    got = lr_of[e].pop()
    worst = max(worst, abs(got - want) / want)
    if worst > 1e-12:
        print("not ok: epoch %d: loom lr %r, torch %r (metrics %s)" % (e, got, want, [value_of.get(i) for i in range(e)]))
        sys.exit(1)
    if e not in value_of:
        print("not ok: epoch %d logged no %s" % (e, metric))
        sys.exit(1)
    sched.step(value_of[e])
    changes += opt.param_groups[0]["lr"] != want
if changes == 0:
    print("not ok: the lr never changed in %d epochs (the case tests nothing)" % len(lr_of))
    sys.exit(1)
print("ok (%d epochs, %d reductions, final lr %.6g, worst relative difference %.1e)" % (len(lr_of), changes, opt.param_groups[0]["lr"], worst))
