#!/usr/bin/env bash
# Token data end to end: `loom data tokens` (llm.c's token file layout, byte-level, the
# train/val split), a generated program training on token windows (specs' Tokens data
# source), and the one-line errors of a short, corrupt or out-of-vocabulary token file
# and of `loom data tokens`' bad arguments.  (runtime/tokens.c itself: tests/test_data.c.)
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
. tests/tap.sh   # plan, ok, fail, expect_error
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plan 9

# a text of 1000 bytes: 900 train tokens, 100 validation tokens
for i in $(seq 1 60); do printf 'In the beginning %03d ' "$i"; done | head -c 1000 >"$work/text.txt"
if "$LOOM" data tokens "$work/text.txt" -o "$work/t.bin" --val 0.1 >"$work/cli.out" 2>&1 &&
   grep -q "wrote $work/t.bin (900 tokens)" "$work/cli.out" && grep -q "wrote $work/t_val.bin (100 tokens)" "$work/cli.out"; then
  ok "tokens_cli_split"
else
  fail "tokens_cli_split" "$(tail -1 "$work/cli.out")"
fi
# the layout: int32 magic, version, count; 253 zero int32; then uint16 little-endian = the bytes
want="20240520 1 900"
got=$(od -An -t d4 -N 12 "$work/t.bin" | xargs)
body=$(tail -c +1025 "$work/t.bin" | od -An -t u2 -v | xargs)
text=$(head -c 900 "$work/text.txt" | od -An -t u1 -v | xargs)
zeros=$(od -An -t d4 -j 12 -N 1012 -v "$work/t.bin" | tr -s ' \n' '\n' | grep -vc '^0*$')
if [ "$got" = "$want" ] && [ "$body" = "$text" ] && [ "$zeros" = 0 ] && [ "$(stat -c %s "$work/t.bin")" = $((1024 + 1800)) ]; then
  ok "tokens_cli_layout"
else
  fail "tokens_cli_layout" "header '$got' (want '$want'), $zeros nonzero header ints, body equal: $([ "$body" = "$text" ] && echo yes || echo no)"
fi
expect_error "tokens_cli_no_out" "data tokens needs -o FILE.bin" "$LOOM" data tokens "$work/text.txt"
expect_error "tokens_cli_bad_val" "--val takes a fraction F, 0 <= F < 1" "$LOOM" data tokens "$work/text.txt" -o "$work/x.bin" --val 1.5
expect_error "tokens_cli_missing" "$work/none.txt: No such file or directory" "$LOOM" data tokens "$work/none.txt" -o "$work/x.bin"

# a small GPT-like program on those files: trains, validates, resumes
cat >"$work/tok.lua" <<LUA
model "TokLM" {
  inputs = { idx = Tensor{16, dtype = "int64"} },
  wte = Embedding(256, 8),
  head = Linear(8, 256),
  forward = function(m, x) return m.head(m.wte(x.idx)) end,
}
train {
  data = Tokens { train = "$work/t.bin", val = "$work/t_val.bin", context = 16 },
  batch_size = 4,
  loss = function(m, b) return cross_entropy(transpose(m(b), 1, 2), b.targets) end,
  optimizer = AdamW { lr = 1e-2, weight_decay = 0.1, decay_min_ndim = 2 },
  max_steps = 30,
}
LUA
if ! "$LOOM" build "$work/tok.lua" -o "$work/prog" >"$work/build.log" 2>&1; then
  for n in train short corrupt vocab; do fail "tokens_program_$n" "loom build failed: $(tail -1 "$work/build.log")"; done
  exit 0
fi
# 30 steps: the loss falls from ln 256 = 5.55; val over 100 tokens: 5 windows of 16 + 1 (stride 16)
if "$work/prog/train" --out "$work/run" >"$work/train.out" 2>&1 &&
   awk '/val\/loss/ { for (i = 1; i <= NF; i++) if ($i == "val/loss") v = $(i + 1) } END { exit !(v > 0 && v < 5.5) }' "$work/train.out"; then
  ok "tokens_program_train"
else
  fail "tokens_program_train" "$(tail -2 "$work/train.out" | tr '\n' ' ')"
fi
# --data DIR finds files of the same names in DIR: broken ones give one line
mkdir -p "$work/bad"
cp "$work/t_val.bin" "$work/bad/t_val.bin"
head -c 1500 "$work/t.bin" >"$work/bad/t.bin"
expect_error "tokens_program_short" "$work/bad/t.bin: truncated: the header says 900 tokens, the file holds 238" \
  "$work/prog/train" --data "$work/bad" --out "$work/run2" --quiet
{ printf "not a token file at all"; cat "$work/text.txt" "$work/text.txt"; } >"$work/bad/t.bin"
expect_error "tokens_program_corrupt" "$work/bad/t.bin: not a token file: magic" \
  "$work/prog/train" --data "$work/bad" --out "$work/run3" --quiet
# GPT-2 tokens (>= 256) into a byte-level program: named with the position
/usr/bin/python3 - "$work/bad/t.bin" <<'PY'
import struct, sys
toks = [i % 300 for i in range(500)]
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<256i", 20240520, 1, len(toks), *([0] * 253)))
    f.write(struct.pack("<%dH" % len(toks), *toks))
PY
expect_error "tokens_program_vocab" "$work/bad/t.bin: token 256 is 256, out of the vocabulary [0, 256) this program was generated for" \
  "$work/prog/train" --data "$work/bad" --out "$work/run4" --quiet
