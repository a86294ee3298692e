"""Checks a model.py written by `loom build --emit torch` against the hand-written
reference in tests/torch/models.py:

    /usr/bin/python3 tests/torch/check_emit.py SPEC_NAME MODEL_PY CLASS EXPECTED_PRINT [CHECKPOINT]

1. print(model) equals loom's own print (EXPECTED_PRINT, from `loom inspect`);
2. a loom checkpoint loads with load_state_dict(strict=True) (when given);
3. with the same weights, the emitted module's forward equals the reference's
   (train and eval mode) within 1e-5 — float32 on the same ops, only the order of
   a few additions can differ.
Prints one line per check: "ok CHECK: ..." or "not ok CHECK: why", CHECK being
print, checkpoint or forward (tests/suite_torch_emit.sh names the results by them).
"""
import importlib.util
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402

torch.set_num_threads(1)


def main():
    spec, path, cls_name, expected_path = sys.argv[1:5]
    ckpt = sys.argv[5] if len(sys.argv) > 5 else None
    mod_spec = importlib.util.spec_from_file_location("emitted_" + spec, path)
    emitted = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(emitted)
    model = getattr(emitted, cls_name)()

    expected = open(expected_path).read().rstrip("\n")
    if str(model) == expected:
        print("ok print: %s's model.py prints as loom inspect" % spec)
    else:
        print("not ok print: %s's model.py prints differently:\n%s" % (spec, str(model)))

    if ckpt:
        state, other, meta = emitted.load_loom_checkpoint(ckpt)
        try:
            model.load_state_dict(state, strict=True)
            print("ok checkpoint: %s's loom checkpoint loads with load_state_dict(strict=True) (%d tensors, %d optimizer tensors, step %s)"
                  % (spec, len(state), len(other), meta.get("step")))
        except Exception as e:  # noqa: BLE001 - report any failure as a test line
            print("not ok checkpoint: %s: load_state_dict failed: %s" % (spec, e))

    ref_cls, inputs = models.SPECS[spec]
    ref = ref_cls()
    ref.load_state_dict(model.state_dict(), strict=True)
    torch.manual_seed(1)
    args = [torch.randint(0, 8, (4,) + s) if dt == torch.int64 else torch.rand((4,) + s) for s, dt in inputs]
    names = [n for n in getattr(emitted, "INPUTS", [])]
    worst = 0.0
    for train in (True, False):
        model.train(train)
        ref.train(train)
        with torch.no_grad():
            x = args[0] if len(args) == 1 and not names else dict(zip(names, args))
            a = model(x)
            b = ref(*args)
        worst = max(worst, (a - b).abs().max().item() / max(1.0, b.abs().max().item()))
    if worst <= 1e-5:
        print("ok forward: %s equals the reference (worst relative difference %.2e)" % (spec, worst))
    else:
        print("not ok forward: %s differs from the reference by %.2e" % (spec, worst))


if __name__ == "__main__":
    main()
