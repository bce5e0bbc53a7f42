-- Bookkeeping of the bridge, in every synced database (landlord and tenants).
CREATE SCHEMA IF NOT EXISTS {{schema}};

-- A slot's initial snapshot reached Kafka; a slot without a row here was
-- interrupted mid-snapshot and is created again.
CREATE TABLE IF NOT EXISTS {{schema}}.slot_state (
    slot_name             text PRIMARY KEY,
    snapshot_lsn          pg_lsn NOT NULL,
    snapshot_completed_at timestamptz NOT NULL DEFAULT now()
);

-- Deleted rows: their key and the delete's version, so that an older update
-- arriving later cannot resurrect them. Published, so that a delete reaches
-- the other side with its version. Removed after the retention period.
CREATE TABLE IF NOT EXISTS {{schema}}.tombstones (
    table_name text NOT NULL,
    row_key    jsonb NOT NULL,
    version    timestamptz NOT NULL,
    source     text NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, row_key)
);

DO $bridge$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = {{publication_literal}}) THEN
        CREATE PUBLICATION {{publication}};
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
                    WHERE p.pubname = {{publication_literal}}
                      AND r.prrelid = {{tombstones_literal}}::regclass) THEN
        ALTER PUBLICATION {{publication}} ADD TABLE {{schema}}.tombstones;
    END IF;
END
$bridge$;
