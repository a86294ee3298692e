#!/usr/bin/env python3
"""Copies a loom-generated model.c with a PROF_MARK before every op of
model_forward and model_backward (a spec with its own training_step: of its parts,
step_forward_K and step_backward_K, and one at each part's end, so that the time
between them, model_user_step's zero_grads and optimizer steps in optim.c, has a
label of its own), for bench/step_bench.c built with -DSTEP_PROF (see bench/step_prof.h).  The ops are found by the comments the emitter writes
above each one:  "    // features.0  <- specs/fashion_cnn.lua:5  Conv2d(1, 32, 3)".

    python3 bench/prof_model.py GENDIR/model.c OUT.c
"""
import re
import sys

src, dst = sys.argv[1], sys.argv[2]
out = ['#include "step_prof.h"\n']
fn = None          # "fwd" / "bwd" while inside model_forward / model_backward ("fwdK" / "bwdK": step_forward_K / step_backward_K)
op_comment = re.compile(r"^    // (\S+)  <- (\S+)(?:  (.*?))?\s*$")
part = re.compile(r"^void step_(forward|backward)_(\d+)\(")
marks = 0
for line in open(src):
    p = part.match(line)
    if line.startswith("real model_forward("):
        fn = "fwd"
    elif line.startswith("void model_backward("):
        fn = "bwd"
    elif p:
        fn = ("fwd" if p.group(1) == "forward" else "bwd") + p.group(2)
    elif line.startswith("}"):
        if fn and fn[-1].isdigit():
            out.append('    PROF_MARK("step: between its parts (zero_grad, optimizer steps: optim.c)");\n')
        fn = None
    m = op_comment.match(line) if fn else None
    if m:
        name, where, what = m.group(1), m.group(2), (m.group(3) or "")
        what = what.replace("(backward)", "").strip()
        label = f"{fn} {name} {what}".strip() + f"  [{where}]"
        out.append(f'    PROF_MARK("{label}");\n')
        marks += 1
    out.append(line)
    if fn and (line.startswith(("real model_forward(", "void model_backward(")) or p):
        setup = f"{fn} (entry)" if fn.startswith("fwd") else f"{fn} (entry: zero activation grads)"
        out.append(f'    PROF_MARK("{setup}");\n')
if marks == 0:
    sys.exit(f"prof_model.py: no op comments found in {src}")
open(dst, "w").write("".join(out))
