-- Bookkeeping of the bridge in each tenant database.
-- slot_state records that a slot's initial snapshot reached Kafka; a slot
-- without a row here was interrupted mid-snapshot and is created again.
CREATE SCHEMA IF NOT EXISTS {{schema}};

CREATE TABLE IF NOT EXISTS {{schema}}.slot_state (
    slot_name             text PRIMARY KEY,
    snapshot_lsn          pg_lsn NOT NULL,
    snapshot_completed_at timestamptz NOT NULL DEFAULT now()
);
