-- Per synced table: read it (snapshot, reconcile) and apply changes to it.
GRANT SELECT, INSERT, UPDATE, DELETE ON {{table}} TO {{role}};
