//! The event timeline's rows: appended as things happen in the fleet, listed newest
//! first with filters, pruned by age. Each append is announced to this process's live
//! feed at once; on PostgreSQL also to every other replica's (`NOTIFY`), so the feed is
//! the whole fleet's whichever replica serves it.

use sqlx::Row;

use super::{Database, Store, StoreError};

/// The PostgreSQL notification channel events are announced on.
const EVENT_CHANNEL: &str = "sluice_events";

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
        if self.database == Database::Postgres {
            let payload = format!("{} {id}", self.origin);
            if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(EVENT_CHANNEL)
                .bind(payload)
                .execute(&self.pool)
                .await
            {
                tracing::debug!(%error, "announcing an event to the other replicas");
            }
        }
        Ok(())
    }

    /// On PostgreSQL, until shutdown: announces the events other replicas append to this
    /// process's live feed. Returns at once on SQLite.
    pub async fn follow_events(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        if self.database != Database::Postgres {
            return;
        }
        loop {
            let mut listener = match self.listener(EVENT_CHANNEL).await {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(error) => {
                    tracing::debug!(%error, "listening for other replicas' events");
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            };
            loop {
                let heard = tokio::select! {
                    heard = listener.recv() => heard,
                    _ = shutdown.changed() => return,
                };
                let Ok(n) = heard else { break };
                let Some((origin, id)) = n.payload().split_once(' ') else {
                    continue;
                };
                let Ok(id) = id.parse::<i64>() else { continue };
                if origin == &*self.origin {
                    continue;
                }
                let one = EventFilter {
                    before_id: Some(id + 1),
                    limit: 1,
                    ..EventFilter::default()
                };
                if let Ok(found) = self.list_events(&one).await {
                    if let Some(e) = found.into_iter().find(|e| e.id == id) {
                        let _ = self.appended.send(e);
                    }
                }
            }
        }
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
