-- The control plane's state. The configuration is kept per object (defaults, frontends,
-- backends) as JSON bodies in document order, together with a single version counter;
-- every committed change also stores the full snapshot it produced (history, rollback).

CREATE TABLE config_state (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL,
    defaults TEXT    NOT NULL
);
INSERT INTO config_state (id, version, defaults) VALUES (1, 0, '{}');

CREATE TABLE frontends (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    body     TEXT NOT NULL
);

CREATE TABLE backends (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    body     TEXT NOT NULL
);

CREATE TABLE snapshots (
    version         INTEGER PRIMARY KEY,
    created_unix_ms INTEGER NOT NULL,
    summary         TEXT    NOT NULL,
    document        TEXT    NOT NULL,
    snapshot        BLOB    NOT NULL
);

CREATE TABLE nodes (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id           TEXT    NOT NULL UNIQUE,
    labels            TEXT    NOT NULL,
    software_version  TEXT    NOT NULL,
    first_seen_ms     INTEGER NOT NULL,
    last_seen_ms      INTEGER NOT NULL,
    applied_version   INTEGER NOT NULL,
    last_nack_version INTEGER,
    last_nack_reason  TEXT
);

-- Only SHA-256 digests of tokens are kept; the tokens themselves are never stored.
CREATE TABLE secrets (
    name            TEXT PRIMARY KEY,
    sha256_hex      TEXT    NOT NULL,
    created_unix_ms INTEGER NOT NULL
);
