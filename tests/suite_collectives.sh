#!/usr/bin/env bash
# runtime/collectives.{h,c} on MPI: build/mpi/test_collectives under mpirun with 1, 2
# and 3 ranks (--oversubscribe: this machine has 2 cores; --allow-run-as-root: the test
# machines run as root).  Each run prints its 12 cases from rank 0.
set -u
. "$(dirname "$0")/tap.sh"
T=build/mpi/test_collectives
CASES=12
plan $((3 * CASES))
for n in 1 2 3; do
  harness "collectives on $n rank(s)" $CASES "s/^\\(ok\\|not ok\\) [0-9]* /\\1 np=$n: /" \
    timeout 120 mpirun --allow-run-as-root --oversubscribe -np $n "$T"
done
