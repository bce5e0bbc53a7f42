-- What tells the triggers that a write is the bridge's own (and must keep
-- the version and side of the change it applies): the session setting
-- cdc_bridge.applying must hold the installation's apply token, whose
-- SHA-256 the applier stores here before its first write on a connection.
-- Any role can set the setting, but only one that knows the token makes
-- the triggers step aside; application roles cannot read the token (it
-- lives in the landlord's bridge schema, see 012) nor set this hash.
CREATE TABLE IF NOT EXISTS {{schema}}.installation (
    name  text PRIMARY KEY,
    value text NOT NULL
);

CREATE OR REPLACE FUNCTION {{schema}}.is_bridge_write() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $bridge$
    SELECT coalesce(current_setting('cdc_bridge.applying', true), '') <> ''
       AND EXISTS (SELECT 1 FROM {{schema}}.installation
                    WHERE name = 'apply_token_sha256'
                      AND value = encode(sha256(convert_to(current_setting('cdc_bridge.applying', true), 'UTF8')), 'hex'))
$bridge$;
