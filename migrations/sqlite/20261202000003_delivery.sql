-- Where a change is live: each version's digest (SHA-256 of its encoded snapshot, hex),
-- the digest each node reports it runs, and the version each object last changed in.
ALTER TABLE snapshots ADD COLUMN digest TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN applied_digest TEXT NOT NULL DEFAULT '';
ALTER TABLE frontends ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE backends ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
