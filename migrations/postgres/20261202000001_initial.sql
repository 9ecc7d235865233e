-- The control plane's state on PostgreSQL: the same tables and meaning as the SQLite
-- schema (`migrations/sqlite/`, where each table is explained), in PostgreSQL's types —
-- every integer a BIGINT, bytes BYTEA. Later changes come as a migration in each
-- directory.

CREATE TABLE config_state (
    id       BIGINT PRIMARY KEY CHECK (id = 1),
    version  BIGINT NOT NULL,
    defaults TEXT   NOT NULL
);
INSERT INTO config_state (id, version, defaults) VALUES (1, 0, '{}');

CREATE TABLE frontends (
    name     TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    body     TEXT   NOT NULL,
    version  BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE backends (
    name     TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    body     TEXT   NOT NULL,
    version  BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE snapshots (
    version         BIGINT PRIMARY KEY,
    created_unix_ms BIGINT NOT NULL,
    summary         TEXT   NOT NULL,
    document        TEXT   NOT NULL,
    snapshot        BYTEA  NOT NULL,
    actor           TEXT   NOT NULL DEFAULT '',
    digest          TEXT   NOT NULL DEFAULT ''
);

CREATE TABLE nodes (
    id                BIGSERIAL PRIMARY KEY,
    node_id           TEXT   NOT NULL UNIQUE,
    labels            TEXT   NOT NULL,
    software_version  TEXT   NOT NULL,
    first_seen_ms     BIGINT NOT NULL,
    last_seen_ms      BIGINT NOT NULL,
    applied_version   BIGINT NOT NULL,
    last_nack_version BIGINT,
    last_nack_reason  TEXT,
    applied_digest    TEXT   NOT NULL DEFAULT ''
);

CREATE TABLE secrets (
    name            TEXT PRIMARY KEY,
    sha256_hex      TEXT   NOT NULL,
    created_unix_ms BIGINT NOT NULL
);

CREATE TABLE certificates (
    name            TEXT PRIMARY KEY,
    cert_pem        TEXT   NOT NULL,
    key_pem         TEXT   NOT NULL,
    created_unix_ms BIGINT NOT NULL
);

CREATE TABLE events (
    id       BIGSERIAL PRIMARY KEY,
    unix_ms  BIGINT NOT NULL,
    kind     TEXT   NOT NULL,
    node     TEXT,
    backend  TEXT,
    server   TEXT,
    version  BIGINT,
    detail   TEXT   NOT NULL,
    actor    TEXT
);
CREATE INDEX events_by_time ON events (unix_ms);
CREATE INDEX events_by_node ON events (node, unix_ms);

CREATE TABLE series (
    tier  BIGINT NOT NULL,
    scope TEXT   NOT NULL,
    t     BIGINT NOT NULL,
    vals  BYTEA  NOT NULL,
    PRIMARY KEY (tier, scope, t)
);
CREATE INDEX series_by_time ON series (tier, t);

CREATE TABLE rollout_policies (
    revision        BIGINT PRIMARY KEY,
    body            TEXT,
    created_unix_ms BIGINT NOT NULL,
    actor           TEXT   NOT NULL DEFAULT ''
);

CREATE TABLE rollouts (
    version         BIGINT PRIMARY KEY,
    state           TEXT   NOT NULL,
    body            TEXT   NOT NULL,
    updated_unix_ms BIGINT NOT NULL
);
CREATE INDEX rollouts_state ON rollouts (state);

CREATE TABLE bootstrap_tokens (
    id              TEXT PRIMARY KEY,
    digest          TEXT   NOT NULL UNIQUE,
    description     TEXT   NOT NULL DEFAULT '',
    created_unix_ms BIGINT NOT NULL,
    expires_unix_ms BIGINT,
    uses_left       BIGINT,
    used            BIGINT NOT NULL DEFAULT 0,
    revoked_unix_ms BIGINT,
    actor           TEXT   NOT NULL DEFAULT ''
);

CREATE TABLE node_credentials (
    node_id         TEXT PRIMARY KEY,
    digest          TEXT UNIQUE,
    issued_unix_ms  BIGINT NOT NULL,
    bootstrap_id    TEXT,
    revoked_unix_ms BIGINT
);
