#!/usr/bin/env bash
# Every mistake in a spec is one clear diagnostic: each tests/spec_fail/*.lua
# carries, on its first line, `-- expect: <the first line loom prints on stderr>`.
# For each, `loom inspect FILE` (spec + graph stages, where every front-end
# error arises) must exit 2, print exactly that first line, and never a
# traceback or an internal error.
set -u
cd "$(dirname "$0")/.."
LOOM=${LOOM:-build/loom}
# an endless loop in a spec is cut off after this much CPU time
export LOOM_SPEC_SECONDS=${LOOM_SPEC_SECONDS:-1}
# and a spec that grows without end stops at this many MiB
export LOOM_SPEC_MEMORY=${LOOM_SPEC_MEMORY:-64}
cases=(tests/spec_fail/*.lua)
[ -f "${cases[0]}" ] || { echo "1..1"; echo "not ok spec_fail: no cases in tests/spec_fail/"; exit 0; }
echo "1..${#cases[@]}"
for f in "${cases[@]}"; do
  name="spec_fail/$(basename "$f" .lua)"
  expect=$(head -n 1 "$f")
  if [[ "$expect" != "-- expect: "* ]]; then
    echo "not ok $name: first line is not '-- expect: ...'"
    continue
  fi
  expect=${expect#-- expect: }
  err=$("$LOOM" inspect "$f" 2>&1 >/dev/null)
  rc=$?
  first=${err%%$'\n'*}
  if [ "$rc" -ne 2 ]; then
    echo "not ok $name: expected exit code 2, got $rc: $first"
  elif grep -qiE 'traceback|internal error' <<<"$err"; then
    echo "not ok $name: stderr has a traceback or an internal error: $first"
  elif [ "$first" != "$expect" ]; then
    echo "not ok $name: expected '$expect' got '$first'"
  else
    echo "ok $name"
  fi
done
