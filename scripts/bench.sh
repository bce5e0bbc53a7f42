#!/usr/bin/env bash
# Benchmarks on a throwaway stack: the reader against pg_recvlogical, the
# replay against a server-side INSERT … ON CONFLICT of the same rows, and
# GET /status with 1,000 tenants against /health and plain serde_json.
# Results: bench-results/reader_throughput.json, bench-results/replay_throughput.json,
# bench-results/status_endpoint.json
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
export STACK_DIR="${STACK_DIR:-${TMPDIR:-/tmp}/cdc-bridge-bench-stack}"
export PG_PORT="${PG_PORT:-57432}" KAFKA_PORT="${KAFKA_PORT:-59292}" PG_FSYNC="${PG_FSYNC:-on}"
scripts/stack.sh down >/dev/null 2>&1 || true
trap 'scripts/stack.sh down' EXIT
scripts/stack.sh up
export CDC_TEST_PG_PORT="$PG_PORT" CDC_TEST_KAFKA="127.0.0.1:$KAFKA_PORT"
# All by default; `scripts/bench.sh status_endpoint` runs one.
for bench in "${@:-reader_throughput replay_throughput status_endpoint}"; do
    for name in $bench; do
        cargo bench --bench "$name"
    done
done
