-- Landlord only: the bridge's instances and what they share (issue: several
-- `run` processes). `instances` holds each live process's heartbeat;
-- `source_leases` says which instance streams each source database (one
-- row per source, taken only once expired, `fence` counting the owners);
-- `tenant_sync_state` is the applier's per-tenant memory that must outlive
-- a process (tenants waiting for a reconcile, tenants unreachable), so that
-- whichever instance applies the tenant next finishes it.
CREATE TABLE IF NOT EXISTS {{schema}}.instances (
    instance_id  text PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    -- The reader role's heartbeat (counted in the spread of sources).
    expires_at   timestamptz NOT NULL,
    -- The applier role's (its waiting tenants are not adopted meanwhile).
    applies_until timestamptz
);
CREATE TABLE IF NOT EXISTS {{schema}}.source_leases (
    source      text PRIMARY KEY,
    owner       text NOT NULL,
    fence       bigint NOT NULL DEFAULT 1,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
-- One row per tenant and instance: each instance removes only its own once
-- it reconciled the tenant (another's reconcile may have read the tenant
-- before this instance skipped its latest changes).
CREATE TABLE IF NOT EXISTS {{schema}}.tenant_sync_state (
    tenant_id  text NOT NULL,
    state      text NOT NULL CHECK (state IN ('reconcile_pending', 'unreachable')),
    owner      text NOT NULL,
    since      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, owner)
);
-- The periodic consistency check, run by one instance per interval: who
-- holds the run (`owner` until `claimed_until`), when the last one
-- finished and what it found (counts by state, inconsistent ratio).
CREATE TABLE IF NOT EXISTS {{schema}}.check_runs (
    name          text PRIMARY KEY,
    owner         text,
    claimed_until timestamptz,
    finished_at   timestamptz,
    counts        jsonb,
    inconsistent_ratio float8,
    duration_seconds   float8
);
