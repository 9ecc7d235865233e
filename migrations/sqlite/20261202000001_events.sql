-- The fleet's event timeline: append-only, pruned by age.
CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    unix_ms  INTEGER NOT NULL,
    -- node_connected, node_disconnected, version_committed, version_acked,
    -- version_nacked, server_state
    kind     TEXT    NOT NULL,
    node     TEXT,
    backend  TEXT,
    server   TEXT,
    version  INTEGER,
    detail   TEXT    NOT NULL
);
CREATE INDEX events_by_time ON events (unix_ms);
