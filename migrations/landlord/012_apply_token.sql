-- Landlord only: the installation's apply token, made once at the first
-- setup (244 random bits from two version-4 UUIDs). The bridge's processes
-- read it at start; it marks their transactions in the WAL (the reader
-- drops echoes only with the right mark) and authorises their writes to
-- the triggers (see 004). Read access: the bridge's role only.
INSERT INTO {{schema}}.installation (name, value)
VALUES ('apply_token', replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''))
ON CONFLICT (name) DO NOTHING;
