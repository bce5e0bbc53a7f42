-- Seed schema of a tenant database (demo and tests). One row, id = 1.
CREATE TABLE IF NOT EXISTS tenant_brandings (
    id              integer PRIMARY KEY DEFAULT 1,
    primary_color   varchar(7),
    secondary_color varchar(7),
    logo_url        text,
    font_family     text,
    custom_css      text,
    favicon_url     text,
    login_message   text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
