-- `cdc-bridge teardown`, once per database after the per-table part.
DROP PUBLICATION IF EXISTS {{publication}};
DROP SCHEMA IF EXISTS {{schema}} CASCADE;
