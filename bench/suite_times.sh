#!/usr/bin/env bash
# bench/suite_times.sh [FILE] [SLOTS]: the seconds each suite took, longest first, and
# what the run would take on SLOTS slots (default $LOOM_TEST_LANES or 2) in the order
# tests/run_all.sh starts them (longest first, each in the first free slot).
# FILE: build/test_times.tsv (default; NAME, wall and user+sys CPU seconds, written by
# the last full `tests/run_all.sh`) or the output of a run (its "NAME ... N s" lines:
# wall seconds only).
set -eu
cd "$(dirname "$0")/.."
file=${1:-build/test_times.tsv}
slots=${2:-${LOOM_TEST_LANES:-2}}
[ -f "$file" ] || { echo "$0: no $file (run tests/run_all.sh first)" >&2; exit 2; }
if [[ $file == *.tsv ]]; then
  rows=$(cat "$file")
else   # tests/run_all.sh's lines: NAME P passed F failed S skipped SECS s
  rows=$(awk '$3 == "passed" && $9 == "s" { printf "%s\t%s\t-\n", $1, $8 }' "$file")
fi
echo "$rows" | sort -t$'\t' -k2,2nr | awk -F'\t' -v slots="$slots" '
  { name[NR] = $1; wall[NR] = $2; cpu[NR] = $3; tw += $2; if ($3 != "-") tc += $3
    printf "%-40s %6d s wall %8s s cpu\n", $1, $2, $3 }
  END {
    for (i = 1; i <= slots; i++) end_[i] = 0
    for (n = 1; n <= NR; n++) {   # list scheduling, longest first
      best = 1; for (i = 2; i <= slots; i++) if (end_[i] < end_[best]) best = i
      end_[best] += wall[n]
    }
    m = 0; for (i = 1; i <= slots; i++) if (end_[i] > m) m = end_[i]
    printf "%d suites: %d s wall in all, %d s cpu; on %d slots, longest first: about %d s (%.1f min)\n",
      NR, tw, tc, slots, m, m / 60
  }'
