-- `cdc-bridge teardown`: removes everything setup installed in one database
-- (the replication slot is dropped separately). Per table first, then once.
DROP TRIGGER IF EXISTS cdc_bridge_stamp ON {{table}};
DROP TRIGGER IF EXISTS cdc_bridge_lock ON {{table}};
DROP TRIGGER IF EXISTS cdc_bridge_tombstone ON {{table}};
ALTER TABLE {{table}} DROP COLUMN IF EXISTS {{source_column}};
ALTER TABLE {{table}} DROP COLUMN IF EXISTS {{version_column}};
ALTER TABLE {{table}} REPLICA IDENTITY DEFAULT;
