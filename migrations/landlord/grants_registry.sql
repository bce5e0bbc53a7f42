-- Landlord only: read the tenant registry (adapt if tenants.registry_query
-- reads other tables).
GRANT SELECT ON tenants TO {{role}};
