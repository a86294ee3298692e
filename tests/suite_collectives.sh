#!/usr/bin/env bash
# runtime/collectives.{h,c} on MPI: build/mpi/test_collectives under mpirun with 1, 2
# and 3 ranks (--oversubscribe: this machine has 2 cores; --allow-run-as-root: the test
# machines run as root).  Each run prints its 14 cases from rank 0.
set -u
. "$(dirname "$0")/tap.sh"
T=build/mpi/test_collectives
CASES=15
plan $((3 * CASES + 1))
for n in 1 2 3; do
  harness "collectives on $n rank(s)" $CASES "s/^\\(ok\\|not ok\\) [0-9]* /\\1 np=$n: /" \
    timeout 120 mpirun --allow-run-as-root --oversubscribe -np $n "$T"
done
# a rank that dies while the others wait in an all-reduce: mpirun ends the job (OpenMPI
# kills the waiting ranks) within 30 s, non-zero, with a line naming the dead rank
t0=$SECONDS
out=$(timeout 30 mpirun --allow-run-as-root --oversubscribe -np 2 "$T" --kill-rank 1 2>&1); rc=$?
if [ $rc -eq 124 ]; then fail "a killed rank ends the job" "still running after 30 s"
elif [ $rc -eq 0 ]; then fail "a killed rank ends the job" "mpirun exited 0"
elif ! printf '%s\n' "$out" | grep -q 'rank 1 .*exited on signal 9'; then fail "a killed rank ends the job" "no line names rank 1: $(printf '%s' "$out" | tr '\n' ' ' | cut -c1-300)"
else ok "a killed rank ends the job (exit $rc after $((SECONDS - t0)) s, rank 1 named)"; fi
