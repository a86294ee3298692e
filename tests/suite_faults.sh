#!/usr/bin/env bash
# Fault injection on checkpointing.  A tiny spec whose epoch is one step, so that every
# step writes last.safetensors and ModelCheckpoint's best file (save_top_k = 1, no
# monitor: the newest is the best, so the best file changes every step):
#  - kills: SIGKILL at FAULT_KILLS (default 40: the suite about 60 s idle, 2 min loaded; the issue asks 100) random
#    moments; after each, the newest checkpoint resumes (one more step), and the file
#    that its ModelCheckpoint state names exists and is a whole safetensors file;
#  - each checkpoint system call failed in turn (tests/faults/failsys.c, LD_PRELOAD:
#    the Nth open/write/fsync/close/rename of a checkpoint write gets ENOSPC, then EIO):
#    the program exits non-zero with one line, and what it leaves still resumes with
#    no dangling callback file and no temporary left behind;
#  - a full disk (a small tmpfs, when this runs as root) and a read-only --out: one
#    line, and the checkpoints already there are untouched.
set -u
cd "$(dirname "$0")/.."
. tests/tap.sh   # plan, ok, fail, skip
plan 8
LOOM=${LOOM:-build/loom}
SHIM=$PWD/build/tests/faults/failsys.so
KILLS=${FAULT_KILLS:-40}
PY=/usr/bin/python3
export GOMP_SPINCOUNT=10000 OMP_NUM_THREADS=1
work=$(mktemp -d)
cleanup() { mountpoint -q "$work/full" 2>/dev/null && umount "$work/full"; mountpoint -q "$work/ro" 2>/dev/null && umount "$work/ro"; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/tiny.lua" <<'EOF'
model "Tiny" {
  inputs = { x = Tensor{8} },
  net = Sequential { Linear(8, 16), ReLU(), Linear(16, 4) },
  forward = function(m, b) return m.net(b.x) end,
}
fabric { accelerator = "cpu" }
train {
  data = Synthetic {
    fields = { x = Tensor{8, dist = "uniform"}, y = Tensor{dtype = "int64", dist = "randint", high = 4} },
    size = 16, val_size = 16,
  },
  batch_size = 16,
  loss = function(m, b) return cross_entropy(m(b), b.y) end,
  optimizer = SGD { lr = 0.1 },
  epochs = 100000,
  callbacks = { ModelCheckpoint { save_top_k = 1, save_last = true } },
}
EOF
if ! "$LOOM" build "$work/tiny.lua" -o "$work/b" >"$work/build.log" 2>&1; then
  fail "faults: build" "$(tail -3 "$work/build.log")"; exit 0
fi
train=$work/b/train

# check_ckpt FILE: prints "STEP FILE_NAMED_BY_MODELCHECKPOINT|-" if FILE is a whole
# safetensors file (header JSON, data offsets contiguous up to the end of the file),
# else "bad WHY".  ModelCheckpoint's state is callback_state_0..2 = (value, epoch, step)
# of its one kept checkpoint, epoch < 0 when none is kept yet.
check_ckpt() {
  "$PY" - "$1" <<'EOF'
import json, os, struct, sys
def whole(p):
    b = open(p, "rb").read()
    if len(b) < 8: return None, "shorter than 8 bytes"
    n = struct.unpack("<Q", b[:8])[0]
    try: h = json.loads(b[8:8 + n])
    except Exception as e: return None, "header: %s" % e
    end = 0
    for k, t in sorted(((k, t) for k, t in h.items() if k != "__metadata__"), key=lambda kt: kt[1]["data_offsets"][0]):
        a, z = t["data_offsets"]
        if a != end: return None, "tensor %s starts at %d, not %d" % (k, a, end)
        end = z
    if 8 + n + end != len(b): return None, "%d bytes, the header says %d" % (len(b), 8 + n + end)
    return h.get("__metadata__", {}), None
p = sys.argv[1]
meta, why = whole(p)
if why: print("bad", why); sys.exit()
step = int(meta["step"])
f = lambda k: float.fromhex(meta[k]) if meta[k].startswith(("0x", "-0x")) else float(meta[k])
epoch, kept = f("callback_state_1"), f("callback_state_2")
named = "-"
if epoch >= 0:
    named = os.path.join(os.path.dirname(p), "epoch=%d-step=%d.safetensors" % (epoch, kept))
    if not os.path.exists(named): print("bad", "its ModelCheckpoint state names %s, which does not exist" % os.path.basename(named)); sys.exit()
    _, why = whole(named)
    if why: print("bad", "%s: %s" % (os.path.basename(named), why)); sys.exit()
print(step, named)
EOF
}

# resumes DIR/last.safetensors for one more step in DIR.r; prints why not, if it fails
resumes() {
  local dir=$1 step=$2
  rm -rf "$dir.r"
  "$train" --resume "$dir/last.safetensors" --max-steps $((step + 1)) --out "$dir.r" --quiet >"$dir.r.log" 2>&1 ||
    echo "resume failed: $(tail -1 "$dir.r.log")"
}

# --- SIGKILL at random moments ----------------------------------------------------
RANDOM=${FAULT_SEED:-11}
bad=0; dangling=0; notresumed=0; first=""
t0=$SECONDS
for i in $(seq "$KILLS"); do
  d=$work/k$i
  "$train" --out "$d" --quiet >/dev/null 2>&1 &
  pid=$!
  # once its first checkpoint exists (≤ 10 s), a random moment within the next 0.3 s
  for _ in $(seq 1000); do [ -f "$d/last.safetensors" ] && break; sleep 0.01; done
  sleep "0.$(printf '%03d' $((RANDOM % 300)))"
  kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
  r=$(check_ckpt "$d/last.safetensors")
  case "$r" in
    bad*"does not exist"*) dangling=$((dangling + 1)); [ -n "$first" ] || first="kill $i: ${r#bad }" ;;
    bad*) bad=$((bad + 1)); [ -n "$first" ] || first="kill $i: last.safetensors: ${r#bad }" ;;
    *) why=$(resumes "$d" "${r%% *}")
       if [ -n "$why" ]; then notresumed=$((notresumed + 1)); [ -n "$first" ] || first="kill $i: $why"; fi ;;
  esac
  rm -rf "$d" "$d.r" "$d.r.log"
done
secs=$((SECONDS - t0))
if [ $bad -eq 0 ] && [ $notresumed -eq 0 ]; then ok "faults: $KILLS kills leave a whole newest checkpoint that resumes ($secs s)"
else fail "faults: $KILLS kills leave a whole newest checkpoint that resumes" "$bad broken, $notresumed did not resume; first: $first"; fi
if [ $dangling -eq 0 ]; then ok "faults: $KILLS kills leave no dangling ModelCheckpoint file name"
else fail "faults: $KILLS kills leave no dangling ModelCheckpoint file name" "$dangling of $KILLS: $first"; fi

# --- each checkpoint system call failed in turn -----------------------------------
# the run under test resumes from the end of epoch 1 and trains one more epoch (--epochs 2:
# a note says it overrides the checkpoint's plan; notes are not counted as error lines),
# whose checkpoints are the new best (replacing the old one) and last.safetensors
"$train" --epochs 1 --out "$work/base" --quiet >/dev/null 2>&1 || { fail "faults: base run" "exit $?"; exit 0; }
if [ ! -f "$SHIM" ]; then skip "faults: each checkpoint syscall fails in turn" "$SHIM is not built (ninja)"
else
  LOOM_FAULT_COUNT=$work/count LD_PRELOAD=$SHIM "$train" --resume "$work/base/last.safetensors" --epochs 2 --out "$work/count.d" --quiet >/dev/null 2>&1
  ncalls=$(cat "$work/count" 2>/dev/null || echo 0)
  for e in 28:ENOSPC 5:EIO; do
    problems=(); dangling=()
    for n in $(seq "$ncalls"); do
      d=$work/f$n
      rm -rf "$d"; cp -a "$work/base" "$d"
      err=$(LOOM_FAULT_NTH=$n LOOM_FAULT_ERRNO=${e%%:*} LD_PRELOAD=$SHIM "$train" --resume "$d/last.safetensors" --epochs 2 --out "$d" --quiet 2>&1 >/dev/null)
      rc=$?
      lines=$(printf '%s' "$err" | grep -vc "^note: ")
      r=$(check_ckpt "$d/last.safetensors")
      tmp=$(ls "$d" | grep "\.tmp\." | head -1)
      if [ $rc -eq 0 ]; then problems+=("call $n: exit 0")
      elif [ "$lines" -ne 1 ]; then problems+=("call $n: $lines lines on stderr: $(printf '%s' "$err" | head -2 | tr '\n' '|')")
      elif [[ "$r" == *"does not exist"* ]]; then dangling+=("$n")
      elif [[ "$r" == bad* ]]; then problems+=("call $n ($err): ${r#bad }")
      elif [ -n "$tmp" ]; then problems+=("call $n: left $tmp")
      elif ! cmp -s "$d/last.safetensors" "$work/base/last.safetensors"; then
        # a new checkpoint (the call failed after its rename): it must resume too
        why=$(resumes "$d" "${r%% *}")
        [ -z "$why" ] || problems+=("call $n: $why")
      fi
    done
    name="faults: each of the $ncalls checkpoint syscalls fails with ${e#*:}"
    if [ "$ncalls" -lt 8 ]; then fail "$name" "only $ncalls counted: is the shim in the way?"
    elif [ ${#problems[@]} -gt 0 ]; then fail "$name" "${#problems[@]} bad: $(printf '%s; ' "${problems[@]:0:3}")"
    else ok "$name: one line, the newest checkpoint resumes"; fi
    if [ ${#dangling[@]} -eq 0 ]; then ok "$name: no dangling ModelCheckpoint file name"
    else fail "$name: no dangling ModelCheckpoint file name" "after calls ${dangling[*]} the checkpoint names a best file already removed"; fi
  done
fi

# --- a full disk, a read-only --out -----------------------------------------------
# both start from the base run's checkpoints and must leave them as they were
same_as_base() {
  local d=$1 f b
  for f in "$work"/base/*.safetensors; do
    b=$(basename "$f")
    if [ ! -e "$d/$b" ]; then echo "$b was removed"; return; fi
    cmp -s "$f" "$d/$b" || { echo "$b changed"; return; }
  done
}
disk_case() {
  local name=$1 dir=$2
  local err rc lines changed
  err=$("$train" --resume "$dir/last.safetensors" --epochs 2 --out "$dir" --quiet 2>&1 >/dev/null); rc=$?
  lines=$(printf '%s' "$err" | grep -vc "^note: ")
  changed=$(same_as_base "$dir")
  if [ $rc -eq 0 ]; then fail "$name" "exit 0"
  elif [ "$lines" -ne 1 ]; then fail "$name" "$lines lines on stderr: $(printf '%s' "$err" | head -2 | tr '\n' '|')"
  elif [ -n "$changed" ]; then fail "$name" "$changed"
  else ok "$name"; fi
}
mkdir -p "$work/full" "$work/ro"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=1m tmpfs "$work/full" 2>/dev/null; then
  cp "$work"/base/*.safetensors "$work/full/"
  dd if=/dev/zero of="$work/full/filler" bs=4k 2>/dev/null   # until the disk is full
  disk_case "faults: a full disk gives one line and loses nothing" "$work/full"
else skip "faults: a full disk gives one line and loses nothing" "not root: no small tmpfs (the ENOSPC pass above stands in)"; fi
cp "$work"/base/*.safetensors "$work/ro/"
if [ "$(id -u)" = 0 ]; then
  mount --bind "$work/ro" "$work/ro" && mount -o remount,bind,ro "$work/ro" 2>/dev/null ||
    { skip "faults: a read-only --out gives one line and loses nothing" "cannot make a read-only bind mount"; exit 0; }
else chmod a-w "$work/ro"; fi
disk_case "faults: a read-only --out gives one line and loses nothing" "$work/ro"
[ "$(id -u)" = 0 ] || chmod u+w "$work/ro"
