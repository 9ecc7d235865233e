//! Rollout rows: the rollout policy's revisions (the newest in force, a removal stored
//! as a revision without a body) and each staged version's record, kept as JSON the
//! rollout module owns.

use sqlx::Row;

use super::{Store, StoreError};

/// One revision of the rollout policy.
#[derive(Debug, Clone)]
pub struct PolicyRow {
    pub revision: u64,
    /// The policy's JSON; `None`: the policy was removed at this revision.
    pub body: Option<String>,
    pub created_unix_ms: i64,
    pub actor: String,
}

fn policy_row(r: &sqlx::any::AnyRow) -> PolicyRow {
    PolicyRow {
        revision: r.get::<i64, _>("revision") as u64,
        body: r.get("body"),
        created_unix_ms: r.get("created_unix_ms"),
        actor: r.get("actor"),
    }
}

impl Store {
    /// The newest revision of the rollout policy, if one was ever written.
    pub async fn rollout_policy(&self) -> Result<Option<PolicyRow>, StoreError> {
        let row = sqlx::query(
            "SELECT revision, body, created_unix_ms, actor FROM rollout_policies
             ORDER BY revision DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(policy_row))
    }

    /// Revisions of the rollout policy, newest first.
    pub async fn rollout_policy_revisions(&self, limit: u32) -> Result<Vec<PolicyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT revision, body, created_unix_ms, actor FROM rollout_policies
             ORDER BY revision DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(policy_row).collect())
    }

    /// Stores a new revision of the policy (`None`: removes it), if the newest revision
    /// is still `expected` (when given); returns the new revision.
    pub async fn put_rollout_policy(
        &self,
        expected: Option<u64>,
        body: Option<&str>,
        actor: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(revision), 0) FROM rollout_policies")
                .fetch_one(&mut *tx)
                .await?;
        if expected.is_some_and(|e| e != current as u64) {
            tx.rollback().await?;
            return Err(StoreError::Conflict {
                current: current as u64,
            });
        }
        sqlx::query(
            "INSERT INTO rollout_policies (revision, body, created_unix_ms, actor)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(current + 1)
        .bind(body)
        .bind(now_ms)
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(current as u64 + 1)
    }

    /// Creates or replaces the record of the rollout of `version`.
    pub async fn save_rollout(
        &self,
        version: u64,
        state: &str,
        body: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rollouts (version, state, body, updated_unix_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (version) DO UPDATE SET state = $2, body = $3, updated_unix_ms = $4",
        )
        .bind(version as i64)
        .bind(state)
        .bind(body)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The record of the rollout of `version`.
    pub async fn rollout(&self, version: u64) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT body FROM rollouts WHERE version = $1")
                .bind(version as i64)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records of the newest rollouts, newest first.
    pub async fn rollouts(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT body FROM rollouts ORDER BY version DESC LIMIT $1")
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The record of a rollout still in progress (`running` or `paused`), the newest.
    pub async fn unfinished_rollout(&self) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT body FROM rollouts WHERE state IN ('running', 'paused')
             ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?)
    }
}
