//! What several control-plane replicas share to run one rollout: the lease that makes
//! one of them the leader (a PostgreSQL session advisory lock held on a connection of its
//! own; on SQLite the one process always leads), the assignment the leader writes for
//! every replica to apply, the nodes connected to other replicas as those last recorded
//! them, and operators' commands waiting for the leader's answer.

use sqlx::{Connection as _, Row};

use super::{Database, Store, StoreError};

/// The PostgreSQL notification channel a new assignment announces itself on.
const ASSIGNMENT_CHANNEL: &str = "sluice_assignment";
/// The advisory lock key of the rollout lease ("sluice" in ASCII).
const LEASE_KEY: i64 = 0x736c_7569_6365;

/// The right to lead, held while this value lives.
pub enum Lease {
    /// SQLite: one process owns the database.
    Sole,
    /// The connection that holds the advisory lock; the lock goes with it.
    Held(sqlx::postgres::PgConnection),
}

impl Lease {
    /// Whether the lease still holds (its connection answers).
    pub async fn check(&mut self) -> Result<(), StoreError> {
        if let Lease::Held(c) = self {
            sqlx::query("SELECT 1").execute(&mut *c).await?;
        }
        Ok(())
    }
}

/// A connection kept between tries of the lease, so that a replica waiting to lead does
/// not open one every second.
#[derive(Default)]
pub struct LeaseTries(Option<sqlx::postgres::PgConnection>);

/// What the leader says every node should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentRow {
    pub newest: u64,
    pub stable: u64,
    /// The nodes reached (the rollout module's JSON).
    pub reach: String,
    /// The replica that wrote it.
    pub leader: String,
    pub updated_unix_ms: i64,
}

/// A node on another replica, as that replica recorded it.
#[derive(Debug, Clone)]
pub struct RemoteNode {
    pub node_id: String,
    pub labels: String,
    pub applied_version: u64,
    pub last_nack: Option<(u64, String)>,
    /// Its latest stats report (protobuf), if any.
    pub stats: Option<Vec<u8>>,
    pub withheld_version: Option<u64>,
}

/// An operator's command for the leader.
#[derive(Debug, Clone)]
pub struct CommandRow {
    pub id: i64,
    pub version: u64,
    pub action: String,
    pub actor: String,
}

impl Store {
    /// Takes the lease if no other replica holds it (on the connection `tries` kept,
    /// which keeps it for the next try when another replica leads).
    pub async fn try_lease(&self, tries: &mut LeaseTries) -> Result<Option<Lease>, StoreError> {
        if self.database == Database::Sqlite {
            return Ok(Some(Lease::Sole));
        }
        let mut c = match tries.0.take() {
            Some(c) => c,
            None => sqlx::postgres::PgConnection::connect(&self.url).await?,
        };
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEASE_KEY)
            .fetch_one(&mut c)
            .await?;
        if got {
            return Ok(Some(Lease::Held(c)));
        }
        tries.0 = Some(c);
        Ok(None)
    }

    /// On PostgreSQL, a connection that hears of every assignment as it is written.
    pub async fn assignment_listener(
        &self,
    ) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        self.listener(ASSIGNMENT_CHANNEL).await
    }

    pub async fn save_assignment(&self, a: &AssignmentRow) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO fleet_assignment (id, newest, stable, reach, leader, updated_unix_ms)
             VALUES (1, $1, $2, $3, $4, $5)
             ON CONFLICT(id) DO UPDATE SET newest = excluded.newest, stable = excluded.stable,
                 reach = excluded.reach, leader = excluded.leader,
                 updated_unix_ms = excluded.updated_unix_ms",
        )
        .bind(a.newest as i64)
        .bind(a.stable as i64)
        .bind(&a.reach)
        .bind(&a.leader)
        .bind(a.updated_unix_ms)
        .execute(&mut *tx)
        .await?;
        if self.database == Database::Postgres {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(ASSIGNMENT_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn assignment(&self) -> Result<Option<AssignmentRow>, StoreError> {
        let row = sqlx::query(
            "SELECT newest, stable, reach, leader, updated_unix_ms FROM fleet_assignment WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| AssignmentRow {
            newest: r.get::<i64, _>(0) as u64,
            stable: r.get::<i64, _>(1) as u64,
            reach: r.get(2),
            leader: r.get(3),
            updated_unix_ms: r.get(4),
        }))
    }

    /// The nodes connected to a replica other than `replica`, heard of since `since_ms`.
    pub async fn nodes_elsewhere(
        &self,
        replica: &str,
        since_ms: i64,
    ) -> Result<Vec<RemoteNode>, StoreError> {
        let rows = sqlx::query(
            "SELECT node_id, labels, applied_version, last_nack_version, last_nack_reason, stats,
                    withheld_version
             FROM nodes WHERE replica <> '' AND replica <> $1 AND last_seen_ms >= $2
             ORDER BY node_id",
        )
        .bind(replica)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| RemoteNode {
                node_id: r.get(0),
                labels: r.get(1),
                applied_version: r.get::<i64, _>(2) as u64,
                last_nack: r
                    .get::<Option<i64>, _>(3)
                    .map(|v| (v as u64, r.get::<Option<String>, _>(4).unwrap_or_default())),
                stats: r.get(5),
                withheld_version: r.get::<Option<i64>, _>(6).map(|v| v as u64),
            })
            .collect())
    }

    /// Leaves a command for the leader; its id.
    pub async fn post_rollout_command(
        &self,
        version: u64,
        action: &str,
        actor: &str,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO rollout_commands (version, action, actor, created_unix_ms)
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(version as i64)
        .bind(action)
        .bind(actor)
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Commands not answered yet, posted since `since_ms`, oldest first.
    pub async fn pending_rollout_commands(
        &self,
        since_ms: i64,
    ) -> Result<Vec<CommandRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, version, action, actor FROM rollout_commands
             WHERE answer IS NULL AND created_unix_ms >= $1 ORDER BY id",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| CommandRow {
                id: r.get(0),
                version: r.get::<i64, _>(1) as u64,
                action: r.get(2),
                actor: r.get(3),
            })
            .collect())
    }

    /// Records the leader's answer, and forgets commands older than `forget_before_ms`.
    pub async fn answer_rollout_command(
        &self,
        id: i64,
        answer: &str,
        forget_before_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE rollout_commands SET answer = $2 WHERE id = $1")
            .bind(id)
            .bind(answer)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM rollout_commands WHERE created_unix_ms < $1")
            .bind(forget_before_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The leader's answer to command `id`, once there is one.
    pub async fn rollout_command_answer(&self, id: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar::<_, Option<String>>(
            "SELECT answer FROM rollout_commands WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    /// Withdraws a command nobody answered (so no leader acts on it later).
    pub async fn withdraw_rollout_command(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM rollout_commands WHERE id = $1 AND answer IS NULL")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
