-- Node credentials. Bootstrap tokens (digests only) are exchanged once per node for the
-- node's own credential; each has an optional expiry and use count and can be revoked.
-- A node's credential (digest) is replaced when it enrolls again; a revoked node id is
-- refused from then on.
CREATE TABLE bootstrap_tokens (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_unix_ms INTEGER NOT NULL,
    expires_unix_ms INTEGER,
    uses_left INTEGER,
    used INTEGER NOT NULL DEFAULT 0,
    revoked_unix_ms INTEGER,
    actor TEXT NOT NULL DEFAULT ''
);

CREATE TABLE node_credentials (
    node_id TEXT PRIMARY KEY,
    digest TEXT UNIQUE,
    issued_unix_ms INTEGER NOT NULL,
    bootstrap_id TEXT,
    revoked_unix_ms INTEGER
);
