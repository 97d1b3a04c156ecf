-- The tokens clients of the daemon present: each belongs to one tenant. Only the SHA-256 of a token (lowercase
-- hex) is kept: whoever reads the database cannot use what they read. A revoked token stays, for the record.
CREATE TABLE IF NOT EXISTS api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    -- Updated at most once a minute: a lookup is a read, not a write, on every call.
    last_used_at_ms INTEGER,
    revoked_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS api_tokens_by_tenant ON api_tokens (tenant_id, id);
