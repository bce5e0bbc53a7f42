-- Landlord only: every tenant database the bridge was installed in or
-- streamed, with the registry row it was reached through, so that
-- `cdc-bridge teardown` also reaches tenants that are inactive, removed from
-- the registry or moved since (each place a tenant lived is one row).
CREATE TABLE IF NOT EXISTS {{schema}}.installed_databases (
    tenant_id       text NOT NULL,
    database_name   text NOT NULL,
    registry_fields jsonb NOT NULL,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, registry_fields)
);
