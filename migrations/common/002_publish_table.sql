-- Runs once per synced table.
-- REPLICA IDENTITY FULL makes PostgreSQL log the old row in full, so an
-- unchanged TOAST value (a large custom_css) is filled from the old row and
-- every Kafka message carries the complete row.
ALTER TABLE {{table}} REPLICA IDENTITY FULL;

DO $bridge$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
                    WHERE p.pubname = {{publication_literal}} AND r.prrelid = {{table_literal}}::regclass) THEN
        ALTER PUBLICATION {{publication}} ADD TABLE {{table}};
    END IF;
END
$bridge$;
