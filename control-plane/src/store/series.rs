//! The traffic history's rows: points written in batches (one transaction per bucket),
//! each under the replica that wrote it, read by scope and time range (every replica's,
//! or one's), pruned per tier by age. What the values mean is
//! `crate::series`'s business; here they are opaque packed bytes.

use sqlx::Row;

use super::{Store, StoreError};

/// One stored point.
#[derive(Debug, Clone)]
pub struct SeriesRow {
    pub scope: String,
    /// Bucket start (Unix ms).
    pub t: i64,
    pub vals: Vec<u8>,
}

impl Store {
    /// Writes `replica`'s `(scope, t, vals)` points of `tier` in one transaction (a point
    /// written again replaces the first).
    pub async fn write_series(
        &self,
        tier: u8,
        replica: &str,
        rows: &[(String, i64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (scope, t, vals) in rows {
            sqlx::query(
                "INSERT INTO series (tier, scope, t, replica, vals) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tier, scope, t, replica) DO UPDATE SET vals = excluded.vals",
            )
            .bind(i64::from(tier))
            .bind(scope)
            .bind(t)
            .bind(replica)
            .bind(vals)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Points of `tier` with `from_ms <= t <= to_ms`, of one scope or (`None`) all, of
    /// one replica or (`None`) every one.
    pub async fn read_series(
        &self,
        tier: u8,
        (scope, replica): (Option<&str>, Option<&str>),
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SeriesRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT scope, t, vals FROM series
             WHERE tier = $1 AND t >= $2 AND t <= $3
               AND ($4 IS NULL OR scope = $4) AND ($5 IS NULL OR replica = $5)
             ORDER BY t",
        )
        .bind(i64::from(tier))
        .bind(from_ms)
        .bind(to_ms)
        .bind(scope)
        .bind(replica)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| SeriesRow {
                scope: r.get(0),
                t: r.get(1),
                vals: r.get(2),
            })
            .collect())
    }

    /// The newest point's time in `tier` that `replica` wrote.
    pub async fn last_series_time(
        &self,
        tier: u8,
        replica: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MAX(t) FROM series WHERE tier = $1 AND replica = $2")
                .bind(i64::from(tier))
                .bind(replica)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Drops `tier`'s points older than `before_ms`, and those of `node:` scopes older
    /// than `nodes_before_ms`. Returns how many.
    pub async fn prune_series(
        &self,
        tier: u8,
        before_ms: i64,
        nodes_before_ms: i64,
    ) -> Result<u64, StoreError> {
        let old = sqlx::query("DELETE FROM series WHERE tier = $1 AND t < $2")
            .bind(i64::from(tier))
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        let nodes = sqlx::query(
            "DELETE FROM series WHERE tier = $1 AND scope >= 'node:' AND scope < 'node;' AND t < $2",
        )
        .bind(i64::from(tier))
        .bind(nodes_before_ms)
        .execute(&self.pool)
        .await?;
        Ok(old.rows_affected() + nodes.rows_affected())
    }

    /// The database's size in bytes (SQLite: pages in use).
    pub async fn database_bytes(&self) -> Result<i64, StoreError> {
        if self.database == super::Database::Postgres {
            return Ok(
                sqlx::query_scalar("SELECT pg_database_size(current_database())::BIGINT")
                    .fetch_one(&self.pool)
                    .await?,
            );
        }
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&self.pool)
            .await?;
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(&self.pool)
            .await?;
        let size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&self.pool)
            .await?;
        Ok((pages - free) * size)
    }
}
