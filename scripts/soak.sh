#!/usr/bin/env bash
# Longer fault-injection runs than CI's, repeated: more SIGKILL rounds on
# one database, a bigger queue killed mid-replay, the durable-write faults
# (held lock, full disk where tmpfs can be mounted).
#
#   scripts/soak.sh [iterations]        default 10
#
# Sizes: SOAK_ROUNDS (SIGKILLs per run, default here 25; CI 5) and
# SOAK_ENTRIES (queued writes killed mid-replay, default here
# 20000; CI 3000). Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

iterations=${1:-10}
export SOAK_ROUNDS=${SOAK_ROUNDS:-25}
export SOAK_ENTRIES=${SOAK_ENTRIES:-20000}

cargo build --release --tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
started=$(date +%s)
for i in $(seq 1 "$iterations"); do
  echo "== soak $i/$iterations (rounds $SOAK_ROUNDS, entries $SOAK_ENTRIES)"
  if ! cargo test --release --test crash --test http_dlq --test retry_queue -- --nocapture >"$log" 2>&1; then
    cat "$log"
    echo "soak failed in iteration $i"
    exit 1
  fi
  grep -E "acknowledged|replayed before|skipped|test result: ok. [1-9]" "$log"
done
echo "soak passed: $iterations iteration(s) in $(( $(date +%s) - started ))s"
