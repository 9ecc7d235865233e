-- Traffic history with several control-plane replicas: each writes the points of its own
-- nodes (and its own fleet-wide point) under its name; reading adds the replicas up.
-- Points from before this change belong to the replica ''.
CREATE TABLE series_by_replica (
    tier    INTEGER NOT NULL,
    scope   TEXT    NOT NULL,
    t       INTEGER NOT NULL,
    replica TEXT    NOT NULL DEFAULT '',
    vals    BLOB    NOT NULL,
    PRIMARY KEY (tier, scope, t, replica)
) WITHOUT ROWID;
INSERT INTO series_by_replica (tier, scope, t, replica, vals)
    SELECT tier, scope, t, '', vals FROM series;
DROP TABLE series;
ALTER TABLE series_by_replica RENAME TO series;
CREATE INDEX series_by_time ON series (tier, t);
