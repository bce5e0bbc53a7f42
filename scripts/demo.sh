#!/usr/bin/env bash
# The demo: build the bridge, start the local stack (PostgreSQL 15 + Kafka),
# create a landlord and three tenant databases with demo branding rows,
# install what the bridge needs, and run the bridge in the foreground.
#
#   scripts/demo.sh         start everything and run the bridge (Ctrl-C stops it)
#   scripts/demo.sh down    stop the stack and delete its data
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
export PG_PORT=55432 KAFKA_PORT=59092
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres)

if [[ "${1:-}" == "down" ]]; then
    exec scripts/stack.sh down
fi

scripts/stack.sh up
cargo build --release --quiet

create_db() {
    if ! "${PSQL[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$1'" | grep -q 1; then
        "${PSQL[@]}" -d postgres -c "CREATE DATABASE $1"
    fi
}

create_db landlord
"${PSQL[@]}" -d landlord -f scripts/seed/landlord.sql
n=0
for slug in acme globex initech; do
    n=$((n + 1))
    db="tenant_$slug"
    create_db "$db"
    "${PSQL[@]}" -d "$db" -f scripts/seed/tenant.sql
    "${PSQL[@]}" -d "$db" -c "INSERT INTO tenant_brandings (id, primary_color, secondary_color, logo_url, font_family)
        VALUES (1, '#10${n}0a0', '#ffffff', 'https://cdn.example.com/$slug/logo.svg', 'Inter')
        ON CONFLICT (id) DO NOTHING"
    "${PSQL[@]}" -d landlord -c "INSERT INTO tenants (id, slug, numeric_id, database_name, status)
        VALUES ($n, '$slug', $((1000 + n)), '$db', 'active') ON CONFLICT (id) DO NOTHING"
done

BRIDGE=(target/release/cdc-bridge --config config/local.toml)
"${BRIDGE[@]}" setup
cat <<MSG

  The bridge runs below. In another terminal, change a tenant's branding:
    psql -h 127.0.0.1 -p $PG_PORT -U postgres -d tenant_acme -c "UPDATE tenant_brandings SET primary_color = '#ff0000' WHERE id = 1"
  and read the landlord row:
    psql -h 127.0.0.1 -p $PG_PORT -U postgres -d landlord -c "SELECT tenant_slug, primary_color FROM tenant_brandings ORDER BY tenant_db_id"
  Metrics: http://127.0.0.1:9187/metrics    Stop: Ctrl-C    Tear down: scripts/demo.sh down

MSG
exec "${BRIDGE[@]}" run
