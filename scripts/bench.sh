#!/usr/bin/env bash
# Reader throughput benchmark against pg_recvlogical, on a throwaway stack.
# Results: bench-results/reader_throughput.json
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
export STACK_DIR="${STACK_DIR:-${TMPDIR:-/tmp}/cdc-bridge-bench-stack}"
export PG_PORT="${PG_PORT:-57432}" KAFKA_PORT="${KAFKA_PORT:-59292}" PG_FSYNC="${PG_FSYNC:-on}"
scripts/stack.sh down >/dev/null 2>&1 || true
trap 'scripts/stack.sh down' EXIT
scripts/stack.sh up
export CDC_TEST_PG_PORT="$PG_PORT" CDC_TEST_KAFKA="127.0.0.1:$KAFKA_PORT"
cargo bench --bench reader_throughput
