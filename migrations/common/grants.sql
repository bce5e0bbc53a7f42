-- `cdc-bridge grants --role NAME`: what the role that runs `cdc-bridge run`
-- needs in each database, once `setup` has been run by the tables' owner.
-- (The role itself also needs LOGIN and REPLICATION:
--    CREATE ROLE name LOGIN REPLICATION PASSWORD '...';)
GRANT CONNECT ON DATABASE {{database}} TO {{role}};
GRANT USAGE ON SCHEMA {{schema}} TO {{role}};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {{schema}} TO {{role}};
