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

-- The key lock: every writer of a synced row key, the application (through
-- the triggers) and the bridge, takes it before deciding, so that the
-- last-writer-wins decision is made against the row and its tombstone as
-- committed, never against a snapshot a concurrent delete or insert has
-- made stale. Lock order everywhere: the row (if one is visible), then the
-- key. Keys hash into 1024 transaction-scoped advisory locks per table, so
-- one transaction never holds more than 1024 of them (a bulk insert of a
-- million rows cannot exhaust the lock table).
CREATE OR REPLACE FUNCTION {{schema}}.lock_key(p_table text, p_key jsonb) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $bridge$
    SELECT pg_advisory_xact_lock(1128874050, (abs(hashtext(p_table || ':' || p_key::text)) % 1024)::int4)
$bridge$;

-- A REPEATABLE READ or SERIALIZABLE transaction reads tombstones in its
-- transaction snapshot, which may miss one committed since: then it must
-- fail (40001, and retry) rather than stamp a version below that
-- tombstone. The probe insert conflicts exactly in that case; it is always
-- undone (subtransaction).
CREATE OR REPLACE FUNCTION {{schema}}.snapshot_probe(p_table text, p_key jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $bridge$
BEGIN
    IF current_setting('transaction_isolation') = 'read committed' THEN
        RETURN;
    END IF;
    BEGIN
        INSERT INTO {{schema}}.tombstones (table_name, row_key, version, source)
        VALUES (p_table, p_key, '-infinity', '') ON CONFLICT DO NOTHING;
        RAISE SQLSTATE 'CDCPR';
    EXCEPTION WHEN SQLSTATE 'CDCPR' THEN
        NULL;
    END;
END
$bridge$;

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
