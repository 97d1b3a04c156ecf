-- Tenants own everything else; a store opened without one works in `default`.
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY NOT NULL,
    created_at_ms BIGINT NOT NULL
);
INSERT INTO tenants (id, created_at_ms) VALUES ('default', (extract(epoch FROM now()) * 1000)::BIGINT)
    ON CONFLICT (id) DO NOTHING;
