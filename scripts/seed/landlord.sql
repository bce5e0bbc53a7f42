-- Seed schema of the landlord database (demo and tests).
CREATE TABLE IF NOT EXISTS tenants (
    id            bigint PRIMARY KEY,
    slug          text NOT NULL UNIQUE,
    numeric_id    integer NOT NULL UNIQUE,
    database_name text NOT NULL UNIQUE,
    status        text NOT NULL DEFAULT 'active'
);

CREATE TABLE IF NOT EXISTS tenant_brandings (
    tenant_db_id    bigint PRIMARY KEY REFERENCES tenants (id),
    tenant_slug     text NOT NULL,
    primary_color   varchar(7),
    secondary_color varchar(7),
    logo_url        text,
    font_family     text,
    custom_css      text,
    favicon_url     text,
    login_message   text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
