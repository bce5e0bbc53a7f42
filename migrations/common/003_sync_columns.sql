-- Runs once per synced table: the two bridge-managed columns and the
-- triggers that keep them right for application writes.
--
--   source column  which side wrote the current row version ('landlord'/'tenant')
--   version column when; monotonic per row: a write always gets a version
--                  above the row's previous one (and above a tombstone of the
--                  same key), even when this server's clock is behind.
--
-- The applier's own writes (authorised by its apply token, see 004) keep
-- the source and version of the change they apply.
-- The functions run as their owner (SECURITY DEFINER), so that application
-- roles need no grant on the bridge's tables.
-- Existing rows get version 1970-01-01 and this side as source: on the first
-- sync the tie-break decides (tenant wins), and any later write wins.
ALTER TABLE {{table}} ADD COLUMN IF NOT EXISTS {{source_column}} text NOT NULL DEFAULT {{side_literal}};
ALTER TABLE {{table}} ADD COLUMN IF NOT EXISTS {{version_column}} timestamptz NOT NULL DEFAULT '1970-01-01 00:00:00+00';

CREATE OR REPLACE FUNCTION {{schema}}.{{stamp_function}}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan AS $bridge$
DECLARE
    floor timestamptz;
    clock_offset interval := coalesce(nullif(current_setting('cdc_bridge.clock_offset', true), '')::interval, '0');
BEGIN
    IF {{schema}}.is_bridge_write() THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        -- The row is locked and OLD is its latest version.
        floor := OLD.{{version_column}} + interval '1 microsecond';
    ELSE
        -- Row (if one is visible: wait for its writers), then key, then
        -- the tombstone read with a snapshot taken after both locks.
        EXECUTE format({{visible_row_share_lock}}, TG_RELID::regclass) USING NEW;
        PERFORM {{schema}}.lock_key({{logical_literal}}, {{row_key_new}});
        PERFORM {{schema}}.snapshot_probe({{logical_literal}}, {{row_key_new}});
        SELECT t.version + interval '1 microsecond' INTO floor
          FROM {{schema}}.tombstones t
         WHERE t.table_name = {{logical_literal}} AND t.row_key = {{row_key_new}};
    END IF;
    NEW.{{version_column}} := greatest(clock_timestamp() + clock_offset, floor);
    NEW.{{source_column}} := {{side_literal}};
    RETURN NEW;
END
$bridge$;

-- A delete takes the key lock after the row lock (the executor locked the
-- row before this trigger runs), like the bridge does.
CREATE OR REPLACE FUNCTION {{schema}}.{{lock_function}}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $bridge$
BEGIN
    IF {{schema}}.is_bridge_write() THEN
        RETURN OLD;
    END IF;
    PERFORM {{schema}}.lock_key({{logical_literal}}, {{row_key_old}});
    RETURN OLD;
END
$bridge$;

CREATE OR REPLACE FUNCTION {{schema}}.{{tombstone_function}}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $bridge$
DECLARE
    clock_offset interval := coalesce(nullif(current_setting('cdc_bridge.clock_offset', true), '')::interval, '0');
BEGIN
    IF {{schema}}.is_bridge_write() THEN
        RETURN OLD;
    END IF;
    INSERT INTO {{schema}}.tombstones AS t (table_name, row_key, version, source)
    VALUES ({{logical_literal}}, {{row_key_old}},
            greatest(clock_timestamp() + clock_offset, OLD.{{version_column}} + interval '1 microsecond'),
            {{side_literal}})
    ON CONFLICT (table_name, row_key) DO UPDATE
        SET version = EXCLUDED.version, source = EXCLUDED.source, deleted_at = now();
    RETURN OLD;
END
$bridge$;

DROP TRIGGER IF EXISTS cdc_bridge_stamp ON {{table}};
CREATE TRIGGER cdc_bridge_stamp BEFORE INSERT OR UPDATE ON {{table}}
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.{{stamp_function}}();
DROP TRIGGER IF EXISTS cdc_bridge_lock ON {{table}};
CREATE TRIGGER cdc_bridge_lock BEFORE DELETE ON {{table}}
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.{{lock_function}}();
DROP TRIGGER IF EXISTS cdc_bridge_tombstone ON {{table}};
CREATE TRIGGER cdc_bridge_tombstone AFTER DELETE ON {{table}}
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.{{tombstone_function}}();
