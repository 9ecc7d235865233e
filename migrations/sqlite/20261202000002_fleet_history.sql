-- Who made each change: the actor a REST client names (X-Sluice-Actor), kept with the
-- version and with the events it caused.
ALTER TABLE snapshots ADD COLUMN actor TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN actor TEXT;
CREATE INDEX events_by_node ON events (node, unix_ms);

-- Traffic history. One row per tier (0: 10 s, 1: 1 min, 2: 10 min), scope (`fleet`,
-- `node:<id>`, `frontend:<name>`, `backend:<name>`, `server:<backend>/<server>`) and
-- bucket start (Unix ms). `vals` packs the bucket's non-zero metrics as
-- (metric id: u8, value: LEB128 varint) pairs: counters are the bucket's total, gauges
-- its mean. The fleet row is written for every bucket, even when all zero: it marks
-- that the control plane was recording then. Pruned per tier by age (series/mod.rs).
CREATE TABLE series (
    tier  INTEGER NOT NULL,
    scope TEXT    NOT NULL,
    t     INTEGER NOT NULL,
    vals  BLOB    NOT NULL,
    PRIMARY KEY (tier, scope, t)
) WITHOUT ROWID;
CREATE INDEX series_by_time ON series (tier, t);
