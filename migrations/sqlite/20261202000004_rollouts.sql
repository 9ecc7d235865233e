-- Staged rollout. The rollout policy's revisions, newest in force (a NULL body: no
-- policy from that revision on); one row per version rolled out under a policy, its
-- record (stages, nodes, gate readings, why it stopped) as JSON.
CREATE TABLE rollout_policies (
    revision INTEGER PRIMARY KEY,
    body TEXT,
    created_unix_ms INTEGER NOT NULL,
    actor TEXT NOT NULL DEFAULT ''
);

CREATE TABLE rollouts (
    version INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_unix_ms INTEGER NOT NULL
);
CREATE INDEX rollouts_state ON rollouts (state);
