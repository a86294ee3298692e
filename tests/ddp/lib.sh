# tests/ddp/lib.sh — the set-up tests/suite_ddp.sh and tests/suite_fsdp.sh share: sourced
# after `plan N` from the repository root with BASE set (the build a variant is copied
# from, its runtime objects up to date, so only the model, the loop and the optimizer
# recompile; --devices=1 variants copy `one`).  Leaves the shell in a temporary
# directory removed at exit; the ranks run under mpirun (--oversubscribe: this machine
# has 2 cores; --allow-run-as-root: the test machines run as root).
ROOT=$PWD
LOOM=${LOOM:-$ROOT/build/loom}
SPEC=${SPEC:-$ROOT/tests/ddp/mlp.lua}
DIFF="python3 $ROOT/tests/ddp/ckpt_diff.py"
TOL=${TOL:-1e-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
export TMPDIR=$tmp   # the ranks' private directories (removed at their exit)
MPI="mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1"

variant() {   # variant NAME SED [FLAGS]: $SPEC through SED, built in NAME/
  local name=$1 script=$2; shift 2
  sed "$script" "$SPEC" >"$name.lua"
  local base=$BASE; [ "${1:-}" = --devices=1 ] && base=one
  [ -d "$base" ] && [ ! -d "$name" ] && cp -a "$base" "$name"
  "$LOOM" build "$name.lua" -o "$name" "$@" >"$name.log" 2>&1
}

within() {   # within NAME A B [PREFIX [TOL]]: A's tensors (under PREFIX) against B's within TOL
  local d t=${5:-$TOL}
  d=$($DIFF "$2" "$3" ${4:-} 2>&1) || { fail "$1" "ckpt_diff: $d"; return; }
  if awk -v d="${d%% *}" -v t="$t" 'BEGIN { exit !(d <= t) }'; then ok "$1 (max relative difference $d)"; else fail "$1" "max relative difference $d > $t"; fi
}

refused() {   # refused NAME SED EXPECT [FLAGS]: loom build refuses $SPEC through SED with the one line EXPECT
  local name=$1 script=$2 want=$3; shift 3
  sed "$script" "$SPEC" >"$name.lua"
  local err rc
  err=$("$LOOM" build "$name.lua" --no-compile -o "$name" "$@" 2>&1); rc=$?
  if [ $rc -eq 2 ] && [ "$(echo "$err" | head -1)" = "$want" ] && ! echo "$err" | grep -qi traceback; then ok "refused: $want"
  else fail "$name refused" "rc $rc: $(echo "$err" | head -2 | tr '\n' ' ')"; fi
}
