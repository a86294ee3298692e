#!/usr/bin/env bash
# The generator against hostile or careless input: paths that a shell would
# misread, strings that would break the generated C, and specs that are merely
# large.  (Spec errors with a fixed message are tests/spec_fail/ cases.)
set -u
cd "$(dirname "$0")/.."
. tests/tap.sh
LOOM=${LOOM:-build/loom}
LOOM=$(cd "$(dirname "$LOOM")" && pwd)/$(basename "$LOOM")
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-10000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plan 4

cat >"$work/small.lua" <<'LUAEOF'
model "Net" { inputs = { x = Tensor{4} }, fc = Linear(4, 2), forward = function(m, x) return m.fc(x.x) end }
fabric { accelerator = "cpu" }
train { data = Synthetic { fields = { x = Tensor{4}, y = Tensor{2} }, size = 64, val_size = 16 }, batch_size = 8,
  loss = function(m, b) return mse_loss(m(b), b.y) end, optimizer = SGD { lr = 0.1 }, epochs = 1 }
LUAEOF

# -o and the program's flags reach ninja and the program as arguments, never
# through a shell: a quote in a path neither breaks the build nor runs anything
out="$work/it's; touch $work/pwned; echo '/out dir"
if "$LOOM" train "$work/small.lua" -o "$out" -- --out "$work/run's dir" --quiet >"$work/q.log" 2>&1 \
   && [ -x "$out/train" ] && [ -d "$work/run's dir" ] && [ ! -e "$work/pwned" ]; then
  ok "paths with quotes and spaces build and train, run nothing"
else
  fail "paths with quotes and spaces build and train, run nothing" "$(ls "$work"; tail -3 "$work/q.log")"
fi

# 1,000 nested Sequentials: inspect and generate in time linear in the depth
# (it was cubic: 55 s of CPU for inspect alone); the bound is CPU seconds, so a
# loaded machine does not fail it
cat >"$work/deep.lua" <<'LUAEOF'
local s = Linear(4, 4)
for i = 1, 1000 do s = Sequential { s } end
model "Net" { inputs = { x = Tensor{4} }, net = s, forward = function(m, x) return m.net(x.x) end }
fabric { accelerator = "cpu" }
train { data = Synthetic { fields = { x = Tensor{4}, y = Tensor{4} } }, batch_size = 8,
  loss = function(m, b) return mse_loss(m(b), b.y) end, optimizer = SGD { lr = 0.1 }, epochs = 1 }
LUAEOF
TIMEFORMAT='%U %S'
cpu=$( { time { "$LOOM" inspect "$work/deep.lua" >"$work/deep.txt" 2>&1 &&
                "$LOOM" build --no-compile -o "$work/deep" "$work/deep.lua" >/dev/null 2>&1; }; } 2>&1 )
rc=$?
cpu=$(awk '{ printf "%.1f", $1 + $2 }' <<<"$cpu")
if [ $rc -ne 0 ]; then fail "1,000 nested Sequentials" "loom failed: $(head -2 "$work/deep.txt")"
elif ! grep -q "^Total: 20 parameters" "$work/deep.txt"; then fail "1,000 nested Sequentials" "inspect output: $(tail -1 "$work/deep.txt")"
elif awk -v c="$cpu" 'BEGIN { exit !(c > 15) }'; then fail "1,000 nested Sequentials" "inspect + build took ${cpu} s of CPU (limit 15)"
else ok "1,000 nested Sequentials inspect and generate in ${cpu} s of CPU"; fi

# Quotes and backslashes in the spec's path, a module's name, ModelCheckpoint's
# dirpath and the logger's names reach the generated C escaped: the program
# compiles (-Werror), writes where the spec says and names tensors as it says
mkdir -p "$work/we\"ird\\dir"
cat >"$work/we\"ird\\dir/sp\"ec.lua" <<'LUAEOF'
model "Net" { inputs = { x = Tensor{4} },
  ['say "hi"'] = Linear(4, 2),
  forward = function(m, x) return m['say "hi"'](x.x) end }
fabric { accelerator = "cpu" }
train { data = Synthetic { fields = { x = Tensor{4}, y = Tensor{2} }, size = 64, val_size = 16 }, batch_size = 8,
  loss = function(m, b) return mse_loss(m(b), b.y) end, optimizer = SGD { lr = 0.1 }, epochs = 2,
  callbacks = { ModelCheckpoint { dirpath = "ckpts\\run1", monitor = "val/loss", save_last = true } },
  loggers = { CSVLogger { root_dir = "lo\"gs", name = "n\\m??/" } } }
LUAEOF
name="strings with quotes and backslashes reach C escaped"
if ! (cd "$work" && "$LOOM" train "we\"ird\\dir/sp\"ec.lua" -o weird -- --out run --quiet) >"$work/w.log" 2>&1; then
  fail "$name" "$(tail -3 "$work/w.log")"
elif [ ! -f "$work/ckpts\\run1/epoch=1-step=16.safetensors" ]; then
  fail "$name" "no checkpoint in 'ckpts\\run1': $(cd "$work" && ls)"
elif ! grep -aq 'say \\"hi\\".weight' "$work/ckpts\\run1/epoch=1-step=16.safetensors"; then
  fail "$name" "the checkpoint does not name the tensor 'say \"hi\".weight'"
elif [ ! -f "$work/run/lo\"gs/n\\m??/version_0/metrics.csv" ]; then
  fail "$name" "no metrics.csv under 'lo\"gs/n\\m??/': $(cd "$work/run" && find . -type f)"
elif ! grep -q 'from we"ird\\dir/sp"ec.lua)' <("$work/weird/train" --help 2>&1); then
  fail "$name" "the program's usage does not name the spec: $("$work/weird/train" --help 2>&1 | tail -1)"
else
  ok "$name"
fi

# a file that Lua would read as precompiled bytecode (first byte ESC; found by
# tests/fuzz's spec target) is a spec error at its line 1, not loom's internal error
printf '\033%%' >"$work/esc.lua"
err=$("$LOOM" inspect "$work/esc.lua" 2>&1); rc=$?
case "$rc:$err" in
  "2:$work/esc.lua:1: this is not a Lua text spec"*) ok "a bytecode-looking spec is refused at line 1" ;;
  *) fail "a bytecode-looking spec is refused at line 1" "exit $rc: $(head -1 <<<"$err")" ;;
esac
