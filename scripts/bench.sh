#!/usr/bin/env bash
# Benchmarks on a throwaway stack: the reader against pg_recvlogical, the
# replay against a server-side INSERT … ON CONFLICT of the same rows, and
# the end-to-end latency against a hand-written dual write, and the fan-out
# of landlord changes to 200 tenants against direct parallel writes, and
# the scale curve from 10 to 500 tenant databases in one process, and GET
# /status with 1,000 tenants against /health and plain serde_json.
# Results: bench-results/NAME.json for each.
#   scripts/bench.sh            every benchmark
#   scripts/bench.sh NAME…      the ones named (reader_throughput, replay_throughput, end_to_end_latency, fanout, scale, status_endpoint)
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
export STACK_DIR="${STACK_DIR:-${TMPDIR:-/tmp}/cdc-bridge-bench-stack}"
export PG_PORT="${PG_PORT:-57432}" KAFKA_PORT="${KAFKA_PORT:-59292}" PG_FSYNC="${PG_FSYNC:-on}"
# The fleet benchmarks run hundreds of tenant databases: a slot, a walsender
# and a few connections each.
export PG_MAX_SLOTS="${PG_MAX_SLOTS:-600}" PG_MAX_CONNECTIONS="${PG_MAX_CONNECTIONS:-1200}"
scripts/stack.sh down >/dev/null 2>&1 || true
trap 'scripts/stack.sh down' EXIT
scripts/stack.sh up
export CDC_TEST_PG_PORT="$PG_PORT" CDC_TEST_KAFKA="127.0.0.1:$KAFKA_PORT"
for bench in "${@:-reader_throughput replay_throughput end_to_end_latency fanout scale status_endpoint}"; do
    for name in $bench; do
        cargo bench --bench "$name"
    done
done
# Plots of what the results hold (matplotlib from PyPI when missing).
if command -v python3 >/dev/null; then
    python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install --quiet matplotlib
    python3 scripts/plot_bench.py
fi
