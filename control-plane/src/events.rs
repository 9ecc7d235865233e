//! The fleet's event timeline: what happened when — nodes connecting and going away,
//! versions committed, acked and nacked (with the reason), server states set — appended
//! to the store as it happens and kept for [`RETENTION`].
//!
//! Recording an event never fails the thing it records: a store error is logged.

use crate::clock::unix_ms;
use crate::store::{Event, Store};

/// How long events are kept.
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// An event of `kind` with `detail`, at the current time; the other fields are set by
/// the caller.
pub fn event(kind: &str, detail: impl Into<String>) -> Event {
    Event {
        unix_ms: unix_ms(),
        kind: kind.to_string(),
        detail: detail.into(),
        ..Event::default()
    }
}

/// Appends `e` to the timeline. Each committed version also drops events past the
/// retention (commits are rare, events many).
pub async fn record(store: &Store, e: Event) {
    let prune = e.kind == "version_committed";
    if let Err(error) = store.record_event(&e).await {
        tracing::warn!(%error, kind = %e.kind, "could not record an event");
        return;
    }
    if prune {
        let before = unix_ms() - RETENTION.as_millis() as i64;
        if let Err(error) = store.prune_events(before).await {
            tracing::warn!(%error, "could not prune old events");
        }
    }
}
