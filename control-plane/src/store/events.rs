//! The event timeline's rows: appended as things happen in the fleet, listed newest
//! first with filters, pruned by age.

use sqlx::Row;

use super::{Store, StoreError};

/// One event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub unix_ms: i64,
    /// `node_connected`, `node_disconnected`, `version_committed`, `version_acked`,
    /// `version_nacked`, `server_state`.
    pub kind: String,
    pub node: Option<String>,
    pub backend: Option<String>,
    pub server: Option<String>,
    pub version: Option<u64>,
    pub detail: String,
    /// Who caused it, for changes made through the API.
    pub actor: Option<String>,
}

/// Which events to list; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub kind: Option<String>,
    pub node: Option<String>,
    pub backend: Option<String>,
    pub server: Option<String>,
    /// Only events older than this id (the next page).
    pub before_id: Option<i64>,
    pub limit: u32,
}

impl Store {
    /// Appends an event (its `id` is assigned here) and announces it to
    /// [`Store::appended_events`] subscribers.
    pub async fn record_event(&self, e: &Event) -> Result<(), StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (unix_ms, kind, node, backend, server, version, detail, actor)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(e.unix_ms)
        .bind(&e.kind)
        .bind(&e.node)
        .bind(&e.backend)
        .bind(&e.server)
        .bind(e.version.map(|v| v as i64))
        .bind(&e.detail)
        .bind(&e.actor)
        .fetch_one(&self.pool)
        .await?;
        let _ = self.appended.send(Event { id, ..e.clone() });
        Ok(())
    }

    /// Every event appended from now on (a slow receiver skips ahead).
    pub fn appended_events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.appended.subscribe()
    }

    /// Events matching `f`, newest first.
    pub async fn list_events(&self, f: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, unix_ms, kind, node, backend, server, version, detail, actor FROM events
             WHERE unix_ms >= $1 AND unix_ms <= $2 AND id < $3
               AND ($4 IS NULL OR kind = $4) AND ($5 IS NULL OR node = $5)
               AND ($6 IS NULL OR backend = $6) AND ($7 IS NULL OR server = $7)
             ORDER BY id DESC LIMIT $8",
        )
        .bind(f.from_ms.unwrap_or(i64::MIN))
        .bind(f.to_ms.unwrap_or(i64::MAX))
        .bind(f.before_id.unwrap_or(i64::MAX))
        .bind(&f.kind)
        .bind(&f.node)
        .bind(&f.backend)
        .bind(&f.server)
        .bind(i64::from(f.limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Event {
                id: r.get(0),
                unix_ms: r.get(1),
                kind: r.get(2),
                node: r.get(3),
                backend: r.get(4),
                server: r.get(5),
                version: r.get::<Option<i64>, _>(6).map(|v| v as u64),
                detail: r.get(7),
                actor: r.get(8),
            })
            .collect())
    }

    /// Drops events older than `before_ms`; returns how many.
    pub async fn prune_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM events WHERE unix_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
