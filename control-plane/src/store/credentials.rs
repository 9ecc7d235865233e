//! Node credential rows: bootstrap tokens (digest, expiry, uses left, revocation) and each
//! node's credential (digest, when issued, revocation of the node id). Secrets are never
//! stored, only their SHA-256 digests (hex).

use sqlx::Row;

use super::{Store, StoreError};

/// One bootstrap token, as listed (never the token itself).
#[derive(Debug, Clone)]
pub struct BootstrapRow {
    pub id: String,
    pub description: String,
    pub created_unix_ms: i64,
    pub expires_unix_ms: Option<i64>,
    /// `None`: any number of uses.
    pub uses_left: Option<u64>,
    pub used: u64,
    pub revoked_unix_ms: Option<i64>,
    pub actor: String,
}

/// Why an enrollment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollRefusal {
    /// No such bootstrap token, or expired, used up or revoked.
    BadToken,
    /// The node id was revoked.
    Revoked,
}

/// One node's credential row: its digest (none for an id revoked before it enrolled)
/// and when the node was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialEntry {
    pub node_id: String,
    pub digest: Option<String>,
    pub revoked_unix_ms: Option<i64>,
}

/// What a presented credential is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRow {
    pub node_id: String,
    pub revoked: bool,
}

fn bootstrap_row(r: &sqlx::any::AnyRow) -> BootstrapRow {
    BootstrapRow {
        id: r.get("id"),
        description: r.get("description"),
        created_unix_ms: r.get("created_unix_ms"),
        expires_unix_ms: r.get("expires_unix_ms"),
        uses_left: r.get::<Option<i64>, _>("uses_left").map(|u| u as u64),
        used: r.get::<i64, _>("used") as u64,
        revoked_unix_ms: r.get("revoked_unix_ms"),
        actor: r.get("actor"),
    }
}

const BOOTSTRAP_COLUMNS: &str =
    "id, description, created_unix_ms, expires_unix_ms, uses_left, used, revoked_unix_ms, actor";

impl Store {
    /// Stores a new bootstrap token (its digest).
    pub async fn create_bootstrap_token(
        &self,
        row: &BootstrapRow,
        digest_hex: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO bootstrap_tokens (id, digest, description, created_unix_ms, expires_unix_ms, uses_left, actor)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&row.id)
        .bind(digest_hex)
        .bind(&row.description)
        .bind(row.created_unix_ms)
        .bind(row.expires_unix_ms)
        .bind(row.uses_left.map(|u| u as i64))
        .bind(&row.actor)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every bootstrap token, newest first.
    pub async fn bootstrap_tokens(&self) -> Result<Vec<BootstrapRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {BOOTSTRAP_COLUMNS} FROM bootstrap_tokens ORDER BY created_unix_ms DESC, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(bootstrap_row).collect())
    }

    pub async fn bootstrap_token(&self, id: &str) -> Result<Option<BootstrapRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {BOOTSTRAP_COLUMNS} FROM bootstrap_tokens WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(bootstrap_row))
    }

    /// Revokes a bootstrap token; false when there is no such token.
    pub async fn revoke_bootstrap_token(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE bootstrap_tokens SET revoked_unix_ms = COALESCE(revoked_unix_ms, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Enrolls `node_id`: spends one use of the bootstrap token whose digest is
    /// `bootstrap` (`None`: the fleet-wide node token, already checked) and records
    /// `credential` (a digest) as the node's, replacing any earlier one — in one
    /// transaction, so a refused enrollment spends nothing.
    pub async fn enroll_node(
        &self,
        node_id: &str,
        bootstrap: Option<&str>,
        credential: &str,
        now_ms: i64,
    ) -> Result<Result<(), EnrollRefusal>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revoked: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_unix_ms FROM node_credentials WHERE node_id = $1")
                .bind(node_id)
                .fetch_optional(&mut *tx)
                .await?;
        if revoked.flatten().is_some() {
            tx.rollback().await?;
            return Ok(Err(EnrollRefusal::Revoked));
        }
        let mut bootstrap_id = None;
        if let Some(digest) = bootstrap {
            let id: Option<String> = sqlx::query_scalar(
                "UPDATE bootstrap_tokens SET used = used + 1,
                     uses_left = CASE WHEN uses_left IS NULL THEN NULL ELSE uses_left - 1 END
                 WHERE digest = $1 AND revoked_unix_ms IS NULL
                   AND (expires_unix_ms IS NULL OR expires_unix_ms > $2)
                   AND (uses_left IS NULL OR uses_left > 0)
                 RETURNING id",
            )
            .bind(digest)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            match id {
                Some(id) => bootstrap_id = Some(id),
                None => {
                    tx.rollback().await?;
                    return Ok(Err(EnrollRefusal::BadToken));
                }
            }
        }
        sqlx::query(
            "INSERT INTO node_credentials (node_id, digest, issued_unix_ms, bootstrap_id)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (node_id) DO UPDATE SET digest = $2, issued_unix_ms = $3, bootstrap_id = $4",
        )
        .bind(node_id)
        .bind(credential)
        .bind(now_ms)
        .bind(bootstrap_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// The node a credential (digest) belongs to.
    pub async fn credential(&self, digest_hex: &str) -> Result<Option<CredentialRow>, StoreError> {
        let row =
            sqlx::query("SELECT node_id, revoked_unix_ms FROM node_credentials WHERE digest = $1")
                .bind(digest_hex)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| CredentialRow {
            node_id: r.get("node_id"),
            revoked: r.get::<Option<i64>, _>("revoked_unix_ms").is_some(),
        }))
    }

    /// Every node credential row.
    pub async fn all_credentials(&self) -> Result<Vec<CredentialEntry>, StoreError> {
        let rows = sqlx::query("SELECT node_id, digest, revoked_unix_ms FROM node_credentials")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| CredentialEntry {
                node_id: r.get("node_id"),
                digest: r.get("digest"),
                revoked_unix_ms: r.get("revoked_unix_ms"),
            })
            .collect())
    }

    /// When `node_id` was revoked, if it was.
    pub async fn node_revoked(&self, node_id: &str) -> Result<Option<i64>, StoreError> {
        let at: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_unix_ms FROM node_credentials WHERE node_id = $1")
                .bind(node_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(at.flatten())
    }

    /// Whether each node enrolled, and when it was revoked: node id → (enrolled, revoked).
    pub async fn node_credentials(
        &self,
    ) -> Result<std::collections::HashMap<String, (bool, Option<i64>)>, StoreError> {
        Ok(self
            .all_credentials()
            .await?
            .into_iter()
            .map(|c| (c.node_id, (c.digest.is_some(), c.revoked_unix_ms)))
            .collect())
    }

    /// Revokes `node_id` for good: its credential (kept, so that it is told it is
    /// revoked) and the id are refused from now on. Returns when it was revoked (earlier,
    /// if it already was).
    pub async fn revoke_node(&self, node_id: &str, now_ms: i64) -> Result<i64, StoreError> {
        sqlx::query(
            "INSERT INTO node_credentials (node_id, digest, issued_unix_ms, revoked_unix_ms)
             VALUES ($1, NULL, $2, $2)
             ON CONFLICT (node_id) DO UPDATE
                 SET revoked_unix_ms = COALESCE(node_credentials.revoked_unix_ms, $2)",
        )
        .bind(node_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(self.node_revoked(node_id).await?.unwrap_or(now_ms))
    }
}
