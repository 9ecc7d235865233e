//! The only module that speaks SQL, to SQLite (the default: a file, WAL journal) or
//! PostgreSQL (`postgres://…`), through sqlx's `Any` driver: one set of queries in the
//! SQL both understand (`$N` parameters, `ON CONFLICT`, `RETURNING`), so both behave the
//! same. Each database has its migrations (`migrations/sqlite/`, `migrations/postgres/`),
//! embedded and applied at start.
//!
//! The configuration lives in `config_state` (version + defaults), `frontends` and
//! `backends` (one JSON body per object, in document order). [`Store::commit`] writes a new
//! document and its snapshot in one transaction whose version bump is conditional on the
//! version the change was computed from, so two writers can never both win.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::AnyPool;
use sqlx::{ConnectOptions, Executor, Row};

use crate::config::{Backend, Certificate, ConfigDocument, Configuration, Defaults, Frontend};

mod credentials;
mod events;
mod leadership;
mod rollouts;
mod series;
#[cfg(test)]
mod suite;
#[cfg(test)]
pub(crate) mod testdb;
pub use credentials::{BootstrapRow, CredentialEntry, CredentialRow, EnrollRefusal};
pub use events::{Event, EventFilter};
pub use leadership::{AssignmentRow, CommandRow, Lease, LeaseTries, RemoteNode};
pub use rollouts::PolicyRow;
pub use series::SeriesRow;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored JSON in {what} is corrupt")]
    Corrupt {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("version conflict: the configuration is at version {current}")]
    Conflict { current: u64 },
    #[error("not found")]
    NotFound,
}

/// One entry of the snapshot history.
#[derive(Debug, Clone)]
pub struct SnapshotRow {
    pub version: u64,
    pub created_unix_ms: i64,
    pub summary: String,
    /// Who made the change ("" for changes the control plane made itself).
    pub actor: String,
    /// SHA-256 of the encoded snapshot, hex ("" for versions from before digests).
    pub digest: String,
    pub document: Option<String>,
    pub snapshot: Option<Vec<u8>>,
}

/// What the store remembers about a node.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub node_id: String,
    pub labels: String,
    pub software_version: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub applied_version: u64,
    pub last_nack_version: Option<u64>,
    pub last_nack_reason: Option<String>,
    /// The digest of the snapshot the node last said it runs (hex).
    pub applied_digest: String,
    /// The control-plane replica its stream is on ("" when none).
    pub replica: String,
    /// Its latest stats report (protobuf) and headline rates (JSON), as its replica last
    /// recorded them.
    pub stats: Option<Vec<u8>>,
    pub rates: String,
}

/// What a replica's heartbeat records of one of its nodes.
#[derive(Debug, Clone, Default)]
pub struct NodeBeat {
    pub node_id: String,
    pub last_seen_ms: i64,
    /// The latest stats report (protobuf; empty before the first).
    pub stats: Vec<u8>,
    /// Headline rates (JSON; empty before the first bucket).
    pub rates: String,
    /// The newest version not sent to it for lacking a feature.
    pub withheld_version: Option<u64>,
}

/// A node as its hello introduces it, on the replica that took its stream.
#[derive(Debug, Clone, Copy)]
pub struct NodeHello<'a> {
    pub node_id: &'a str,
    pub labels_json: &'a str,
    pub software_version: &'a str,
    pub applied_version: u64,
    pub replica: &'a str,
}

/// A node's answer to a version, as recorded.
#[derive(Debug, Clone, Copy)]
pub enum NodeReply<'a> {
    /// Applied; the digest (hex) of what the node now runs.
    Ack {
        digest_hex: &'a str,
    },
    Nack {
        reason: &'a str,
    },
}

/// What a commit records beside the configuration.
#[derive(Debug, Clone, Copy)]
pub struct CommitInfo<'a> {
    pub summary: &'a str,
    /// The snapshot's digest (hex).
    pub digest: &'a str,
    /// Who asked for the change.
    pub actor: &'a str,
    pub created_unix_ms: i64,
}

/// The PostgreSQL notification channel a commit announces itself on.
const VERSION_CHANNEL: &str = "sluice_versions";

/// Which database a store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    database: Database,
    /// The URL it was opened with (PostgreSQL: for the version listener's connection).
    url: std::sync::Arc<str>,
    /// Every event as it is appended (the live feed).
    appended: tokio::sync::broadcast::Sender<Event>,
    /// Tells this process's announcements from other replicas' (random, per process).
    origin: std::sync::Arc<str>,
}

impl StoreError {
    /// The database could not be reached (down, restarting, the network), as opposed to
    /// refusing a statement: worth answering 503 and retrying.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // PostgreSQL: connection exceptions (08…), shutting down (57P01–57P03).
                sqlx::Error::Database(d) => d
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
                _ => false,
            },
            _ => false,
        }
    }
}

fn corrupt(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> StoreError {
    let what = what.into();
    move |source| StoreError::Corrupt { what, source }
}

impl Store {
    /// Opens the database at `url_or_path` — `postgres://…` (or `postgresql://…`), or a
    /// SQLite file (a path or `sqlite:` URL, created if missing) — and applies its
    /// migrations.
    pub async fn open(url_or_path: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let postgres =
            url_or_path.starts_with("postgres://") || url_or_path.starts_with("postgresql://");
        let (database, url) = if postgres {
            (Database::Postgres, url_or_path.to_string())
        } else {
            let sqlite = if url_or_path.starts_with("sqlite:") {
                SqliteConnectOptions::from_str(url_or_path)?
            } else {
                SqliteConnectOptions::new().filename(url_or_path)
            }
            .create_if_missing(true);
            (Database::Sqlite, sqlite.to_url_lossy().to_string())
        };
        let opts = AnyConnectOptions::from_str(&url)?;
        let mut pool = AnyPoolOptions::new()
            .max_connections(if postgres { 8 } else { 4 })
            // A database that cannot be reached answers (503) within two seconds.
            .acquire_timeout(Duration::from_secs(if postgres { 2 } else { 5 }));
        if !postgres {
            pool = pool.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON")
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = pool.connect_with(opts).await?;
        match database {
            Database::Sqlite => sqlx::migrate!("../migrations/sqlite").run(&pool).await?,
            Database::Postgres => sqlx::migrate!("../migrations/postgres").run(&pool).await?,
        }
        Ok(Self {
            pool,
            database,
            url: url.into(),
            appended: tokio::sync::broadcast::channel(256).0,
            origin: format!("{:016x}", rand::random::<u64>()).into(),
        })
    }

    /// On PostgreSQL, a connection that hears of every version committed, by any
    /// replica, as it commits (`LISTEN`); `None` on SQLite.
    pub async fn version_listener(&self) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        self.listener(VERSION_CHANNEL).await
    }

    async fn listener(
        &self,
        channel: &str,
    ) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        if self.database != Database::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen(channel).await?;
        Ok(Some(listener))
    }

    /// Which database this store is on.
    pub fn database(&self) -> Database {
        self.database
    }

    /// The current configuration version alone.
    pub async fn version(&self) -> Result<u64, StoreError> {
        let v: i64 = sqlx::query_scalar("SELECT version FROM config_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(v as u64)
    }

    /// The current version and configuration, read in one transaction: what is
    /// returned is one committed version.
    pub async fn load(&self) -> Result<(u64, Configuration), StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.database == Database::Postgres {
            // One snapshot for every statement of the transaction (the default, READ
            // COMMITTED, takes one per statement). SQLite's transactions are that already.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query("SELECT version, defaults FROM config_state WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let version: i64 = row.get(0);
        let defaults: String = row.get(1);
        let defaults: Defaults =
            serde_json::from_str(&defaults).map_err(corrupt("config_state.defaults"))?;
        let mut document = ConfigDocument {
            defaults,
            ..Default::default()
        };
        for row in sqlx::query("SELECT name, body FROM frontends ORDER BY position")
            .fetch_all(&mut *tx)
            .await?
        {
            let name: String = row.get(0);
            let body: String = row.get(1);
            let f: Frontend =
                serde_json::from_str(&body).map_err(corrupt(format!("frontend {name}")))?;
            document.frontends.push(f);
        }
        for row in sqlx::query("SELECT name, body FROM backends ORDER BY position")
            .fetch_all(&mut *tx)
            .await?
        {
            let name: String = row.get(0);
            let body: String = row.get(1);
            let b: Backend =
                serde_json::from_str(&body).map_err(corrupt(format!("backend {name}")))?;
            document.backends.push(b);
        }
        let certificates = sqlx::query(
            "SELECT name, cert_pem, key_pem, created_unix_ms FROM certificates ORDER BY name",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| Certificate {
            name: r.get("name"),
            cert_pem: r.get("cert_pem"),
            key_pem: r.get("key_pem"),
            created_unix_ms: r.get("created_unix_ms"),
        })
        .collect();
        tx.commit().await?;
        Ok((
            version as u64,
            Configuration {
                document,
                certificates,
            },
        ))
    }

    /// Stores `config` as version `from_version + 1` with its encoded snapshot,
    /// atomically. Fails with [`StoreError::Conflict`] if the stored version is no longer
    /// `from_version`. The certificate set is rewritten only when `certificates_changed`.
    pub async fn commit(
        &self,
        from_version: u64,
        config: &Configuration,
        certificates_changed: bool,
        info: &CommitInfo<'_>,
        snapshot: &[u8],
    ) -> Result<u64, StoreError> {
        let new_version = from_version + 1;
        let doc = &config.document;
        let mut tx = self.pool.begin().await?;
        let bumped = sqlx::query(
            "UPDATE config_state SET version = $1, defaults = $2 WHERE id = 1 AND version = $3",
        )
        .bind(new_version as i64)
        .bind(serde_json::to_string(&doc.defaults).expect("serializable"))
        .bind(from_version as i64)
        .execute(&mut *tx)
        .await?;
        if bumped.rows_affected() != 1 {
            let current: i64 = sqlx::query_scalar("SELECT version FROM config_state WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            return Err(StoreError::Conflict {
                current: current as u64,
            });
        }
        // Each object keeps the version it last changed in.
        let mut before: HashMap<(String, String), (String, i64)> = HashMap::new();
        for table in ["frontends", "backends"] {
            let rows = sqlx::query(&format!("SELECT name, body, version FROM {table}"))
                .fetch_all(&mut *tx)
                .await?;
            for r in rows {
                before.insert((table.to_string(), r.get(0)), (r.get(1), r.get(2)));
            }
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *tx)
                .await?;
        }
        let bodies = doc
            .frontends
            .iter()
            .map(|f| ("frontends", &f.name, serde_json::to_string(f)))
            .chain(
                doc.backends
                    .iter()
                    .map(|b| ("backends", &b.name, serde_json::to_string(b))),
            );
        let mut positions: HashMap<&str, i64> = HashMap::new();
        for (table, name, body) in bodies {
            let body = body.expect("serializable");
            let position = positions.entry(table).or_default();
            let version = match before.get(&(table.to_string(), name.clone())) {
                Some((old, v)) if *old == body => *v,
                _ => new_version as i64,
            };
            sqlx::query(&format!(
                "INSERT INTO {table} (name, position, body, version) VALUES ($1, $2, $3, $4)"
            ))
            .bind(name)
            .bind(*position)
            .bind(body)
            .bind(version)
            .execute(&mut *tx)
            .await?;
            *position += 1;
        }
        if certificates_changed {
            sqlx::query("DELETE FROM certificates")
                .execute(&mut *tx)
                .await?;
            for c in &config.certificates {
                sqlx::query(
                    "INSERT INTO certificates (name, cert_pem, key_pem, created_unix_ms)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&c.name)
                .bind(&c.cert_pem)
                .bind(&c.key_pem)
                .bind(c.created_unix_ms)
                .execute(&mut *tx)
                .await?;
            }
        }
        if self.database == Database::Postgres {
            // Delivered to every listening replica when (and only if) this commits.
            sqlx::query(&format!("NOTIFY {VERSION_CHANNEL}"))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO snapshots (version, created_unix_ms, summary, document, snapshot, actor, digest)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new_version as i64)
        .bind(info.created_unix_ms)
        .bind(info.summary)
        .bind(serde_json::to_string(doc).expect("serializable"))
        .bind(snapshot)
        .bind(info.actor)
        .bind(info.digest)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(new_version)
    }

    /// Snapshot history, newest first, without bodies: at most `limit` entries older than
    /// `before` (all when `None`).
    pub async fn list_snapshots(
        &self,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<SnapshotRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, created_unix_ms, summary, actor, digest FROM snapshots WHERE version < $1
             ORDER BY version DESC LIMIT $2",
        )
        .bind(before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| SnapshotRow {
                version: r.get::<i64, _>(0) as u64,
                created_unix_ms: r.get(1),
                summary: r.get(2),
                actor: r.get(3),
                digest: r.get(4),
                document: None,
                snapshot: None,
            })
            .collect())
    }

    /// Drops the bodies (document and snapshot) of every version older than the newest
    /// `keep` (at least one is always kept); their summaries stay. Returns how many were
    /// dropped.
    pub async fn prune_history(&self, keep: u64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE snapshots SET document = '', snapshot = $2
             WHERE version <= (SELECT MAX(version) FROM snapshots) - $1 AND document != ''",
        )
        .bind(keep.max(1) as i64)
        .bind(Vec::<u8>::new())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// One stored snapshot with its document and encoded protobuf (both empty when
    /// retention dropped them).
    pub async fn get_snapshot(&self, version: u64) -> Result<SnapshotRow, StoreError> {
        let r = sqlx::query(
            "SELECT version, created_unix_ms, summary, document, snapshot, actor, digest FROM snapshots WHERE version = $1",
        )
        .bind(version as i64)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(SnapshotRow {
            version: r.get::<i64, _>(0) as u64,
            created_unix_ms: r.get(1),
            summary: r.get(2),
            actor: r.get(5),
            digest: r.get(6),
            document: Some(r.get(3)),
            snapshot: Some(r.get(4)),
        })
    }

    /// The SHA-256 digest stored for a named secret.
    pub async fn secret_digest(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT sha256_hex FROM secrets WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn set_secret_digest(
        &self,
        name: &str,
        digest_hex: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO secrets (name, sha256_hex, created_unix_ms) VALUES ($1, $2, $3)
             ON CONFLICT(name) DO UPDATE SET sha256_hex = excluded.sha256_hex,
                                             created_unix_ms = excluded.created_unix_ms",
        )
        .bind(name)
        .bind(digest_hex)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a node's hello.
    pub async fn upsert_node(&self, n: &NodeHello<'_>, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (node_id, labels, software_version, first_seen_ms, last_seen_ms, applied_version, replica)
             VALUES ($1, $2, $3, $4, $4, $5, $6)
             ON CONFLICT(node_id) DO UPDATE SET labels = excluded.labels,
                 software_version = excluded.software_version,
                 last_seen_ms = excluded.last_seen_ms,
                 applied_version = excluded.applied_version,
                 replica = excluded.replica",
        )
        .bind(n.node_id)
        .bind(n.labels_json)
        .bind(n.software_version)
        .bind(now_ms)
        .bind(n.applied_version as i64)
        .bind(n.replica)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records an ack (`nack_reason` None) or a nack.
    pub async fn record_node_reply(
        &self,
        node_id: &str,
        version: u64,
        reply: NodeReply<'_>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let q = match reply {
            NodeReply::Ack { digest_hex } => sqlx::query(
                "UPDATE nodes SET applied_version = $2, last_seen_ms = $3, applied_digest = $4
                 WHERE node_id = $1",
            )
            .bind(node_id)
            .bind(version as i64)
            .bind(now_ms)
            .bind(digest_hex),
            NodeReply::Nack { reason } => sqlx::query(
                "UPDATE nodes SET last_nack_version = $2, last_seen_ms = $3, last_nack_reason = $4
                 WHERE node_id = $1",
            )
            .bind(node_id)
            .bind(version as i64)
            .bind(now_ms)
            .bind(reason),
        };
        q.execute(&self.pool).await?;
        Ok(())
    }

    pub async fn touch_node(
        &self,
        node_id: &str,
        now_ms: i64,
        replica: &str,
    ) -> Result<(), StoreError> {
        // The stream ended: the node is no longer on this replica (unless it already
        // moved to another).
        sqlx::query(
            "UPDATE nodes SET last_seen_ms = $2,
                 replica = CASE WHEN replica = $3 THEN '' ELSE replica END
             WHERE node_id = $1",
        )
        .bind(node_id)
        .bind(now_ms)
        .bind(replica)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records when each of `seen`'s nodes was last heard from on `replica`, with its
    /// latest report, in one transaction.
    pub async fn heartbeat_nodes(
        &self,
        seen: &[NodeBeat],
        replica: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for n in seen {
            sqlx::query(
                "UPDATE nodes SET last_seen_ms = $2, replica = $3, stats = $4, rates = $5,
                     withheld_version = $6
                 WHERE node_id = $1",
            )
            .bind(&n.node_id)
            .bind(n.last_seen_ms)
            .bind(replica)
            .bind((!n.stats.is_empty()).then_some(&n.stats))
            .bind(&n.rates)
            .bind(n.withheld_version.map(|v| v as i64))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The digest of version `version` (hex), if it is stored.
    pub async fn snapshot_digest(&self, version: u64) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT digest FROM snapshots WHERE version = $1")
                .bind(version as i64)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records the digest of the snapshot a node says it runs.
    pub async fn record_node_digest(&self, node_id: &str, digest: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET applied_digest = $2 WHERE node_id = $1")
            .bind(node_id)
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The version the object `name` of `table` (`frontends` or `backends`) last
    /// changed in; 0 when there is no such object.
    pub async fn object_version(&self, table: &str, name: &str) -> Result<u64, StoreError> {
        let table = if table == "frontends" {
            "frontends"
        } else {
            "backends"
        };
        let v: Option<i64> =
            sqlx::query_scalar(&format!("SELECT version FROM {table} WHERE name = $1"))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(v.unwrap_or(0) as u64)
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT node_id, labels, software_version, first_seen_ms, last_seen_ms, applied_version,
                    last_nack_version, last_nack_reason, applied_digest, replica, stats, rates
             FROM nodes ORDER BY node_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| NodeRow {
                node_id: r.get(0),
                labels: r.get(1),
                software_version: r.get(2),
                first_seen_ms: r.get(3),
                last_seen_ms: r.get(4),
                applied_version: r.get::<i64, _>(5) as u64,
                last_nack_version: r.get::<Option<i64>, _>(6).map(|v| v as u64),
                last_nack_reason: r.get(7),
                applied_digest: r.get(8),
                replica: r.get(9),
                stats: r.get(10),
                rates: r.get(11),
            })
            .collect())
    }
}
