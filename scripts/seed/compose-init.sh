#!/bin/sh
# docker-compose: seed the landlord and three demo tenants (like scripts/demo.sh).
set -e
psql -v ON_ERROR_STOP=1 -U postgres -c "CREATE DATABASE landlord"
psql -v ON_ERROR_STOP=1 -U postgres -d landlord -f /seed/landlord.sql
n=0
for slug in acme globex initech; do
    n=$((n + 1))
    psql -v ON_ERROR_STOP=1 -U postgres -c "CREATE DATABASE tenant_$slug"
    psql -v ON_ERROR_STOP=1 -U postgres -d "tenant_$slug" -f /seed/tenant.sql
    psql -v ON_ERROR_STOP=1 -U postgres -d "tenant_$slug" -c \
        "INSERT INTO tenant_brandings (id, primary_color, secondary_color, font_family) VALUES (1, '#10${n}0a0', '#ffffff', 'Inter')"
    psql -v ON_ERROR_STOP=1 -U postgres -d landlord -c \
        "INSERT INTO tenants (id, slug, numeric_id, database_name) VALUES ($n, '$slug', $((1000 + n)), 'tenant_$slug')"
done
