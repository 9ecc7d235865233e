-- Several control-plane replicas on one database: the replica each node's stream is on
-- ('' when none). A replica refreshes its nodes' last_seen_ms every few seconds, so every
-- replica can tell a node connected elsewhere from one that is gone.
ALTER TABLE nodes ADD COLUMN replica TEXT NOT NULL DEFAULT '';
