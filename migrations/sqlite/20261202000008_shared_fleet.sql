-- Several control-plane replicas, one fleet: each replica records its nodes' latest stats
-- report, headline rates and withheld version with its heartbeat, so that every replica
-- shows every node's traffic and the rollout leader's gates read every node. One replica
-- leads rollouts: it decides what every node runs and writes it here, the others apply
-- it to their own nodes; operators' commands sent to a replica that does not lead wait
-- here for the leader's answer.
ALTER TABLE nodes ADD COLUMN stats BLOB;
ALTER TABLE nodes ADD COLUMN rates TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN withheld_version INTEGER;
CREATE TABLE fleet_assignment (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    newest          INTEGER NOT NULL,
    stable          INTEGER NOT NULL,
    reach           TEXT    NOT NULL,
    leader          TEXT    NOT NULL,
    updated_unix_ms INTEGER NOT NULL
);
CREATE TABLE rollout_commands (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    version         INTEGER NOT NULL,
    action          TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    answer          TEXT
);
