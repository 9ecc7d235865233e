-- Traffic history with several control-plane replicas: each writes the points of its own
-- nodes (and its own fleet-wide point) under its name; reading adds the replicas up.
ALTER TABLE series ADD COLUMN replica TEXT NOT NULL DEFAULT '';
ALTER TABLE series DROP CONSTRAINT series_pkey;
ALTER TABLE series ADD PRIMARY KEY (tier, scope, t, replica);
