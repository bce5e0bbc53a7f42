#!/usr/bin/env bash
# The test command: starts a throwaway PostgreSQL 15 cluster and Kafka broker
# (installing what is missing), runs the whole test suite against them, and
# stops them again. Extra arguments go to `cargo test`.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
export STACK_DIR="${STACK_DIR:-${TMPDIR:-/tmp}/cdc-bridge-test-stack}"
export PG_PORT="${PG_PORT:-25432}" KAFKA_PORT="${KAFKA_PORT:-29192}" PG_FSYNC=off

if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust (rustup) first" >&2
    exit 1
fi

# Tools some tests drive: promtool (alert rules and dashboard queries) and a
# headless Chromium (the dashboard page). Installed once, quietly, from
# Debian when missing; the tests fail, not skip, without them.
need_packages=()
command -v promtool >/dev/null || need_packages+=(prometheus)
command -v chromium >/dev/null || need_packages+=(chromium)
if [ "${#need_packages[@]}" -gt 0 ]; then
    echo "installing ${need_packages[*]} (apt-get)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
fi

scripts/stack.sh down >/dev/null 2>&1 || true
trap 'scripts/stack.sh down >/dev/null 2>&1' EXIT
scripts/stack.sh up

export CDC_TEST_PG_PORT="$PG_PORT" CDC_TEST_KAFKA="127.0.0.1:$KAFKA_PORT"
# The integration tests share one binary and mostly wait on PostgreSQL and
# Kafka, so more of them run at once than there are cores. Three is the
# fastest that stays reliable on the 2-core CI machine: more load slows the
# Kafka outage test, the longest, more than it speeds up the rest.
# `scripts/test.sh -- --test-threads=N` (or RUST_TEST_THREADS=N) overrides it.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-3}"
log="$(mktemp)"
set +e
cargo test --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line with the totals of every test binary (unit, integration, doc).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
