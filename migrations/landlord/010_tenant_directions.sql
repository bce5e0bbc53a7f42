-- Landlord only: per-tenant sync direction overrides, changed with
-- `cdc-bridge direction` while the bridge runs. tenant_id '*' overrides the
-- configured default for every tenant without a row of its own.
CREATE TABLE IF NOT EXISTS {{schema}}.tenant_directions (
    tenant_id  text PRIMARY KEY,
    direction  text NOT NULL CHECK (direction IN ('both', 'to_landlord', 'to_tenant', 'paused')),
    updated_at timestamptz NOT NULL DEFAULT now()
);
