-- Tenants own everything else; a store opened without one works in `default`.
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY NOT NULL,
    created_at_ms INTEGER NOT NULL
);
INSERT OR IGNORE INTO tenants (id, created_at_ms) VALUES ('default', CAST(unixepoch('subsec') * 1000 AS INTEGER));
