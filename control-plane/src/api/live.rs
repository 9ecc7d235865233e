//! `/api/v1/live`: a server-sent event stream for the dashboard — every event as it is
//! recorded (`event: event`, an [`EventView`]) and every traffic bucket as it closes
//! (`event: tick`, a [`TickView`]: the fleet's metrics and each node's headline ones).
//! A client that falls behind gets `event: lagged` and should re-read what it shows.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use super::events::EventView;
use super::AppState;
use crate::series::metric::Metric;
use crate::series::Tick;

/// The metrics each node carries in a tick.
const NODE_METRICS: [Metric; 6] = [
    Metric::Connections,
    Metric::Tunnels,
    Metric::Upgrades,
    Metric::Requests,
    Metric::Responses5xx,
    Metric::ErrorsConnect,
];

#[derive(Debug, Serialize, ToSchema)]
pub struct TickView {
    /// Bucket start, Unix ms.
    pub t: i64,
    pub step_ms: i64,
    /// Every metric, fleet-wide: gauges as levels, counters per second.
    pub fleet: BTreeMap<&'static str, f64>,
    /// Per connected node: connections, tunnels, upgrades, requests, responses_5xx,
    /// errors (all error kinds) per second.
    pub nodes: BTreeMap<String, BTreeMap<&'static str, f64>>,
}

impl From<&Tick> for TickView {
    fn from(t: &Tick) -> Self {
        let fleet = Metric::ALL
            .into_iter()
            .map(|m| (m.name(), t.value("fleet", m)))
            .collect();
        let nodes = t
            .points
            .keys()
            .filter_map(|scope| scope.strip_prefix("node:").map(|n| (n, scope)))
            .map(|(node, scope)| {
                let mut v: BTreeMap<&'static str, f64> = NODE_METRICS
                    .into_iter()
                    .map(|m| (m.name(), t.value(scope, m)))
                    .collect();
                v.insert(
                    "errors",
                    Metric::ERRORS.into_iter().map(|m| t.value(scope, m)).sum(),
                );
                (node.to_string(), v)
            })
            .collect();
        TickView {
            t: t.t,
            step_ms: t.step_ms,
            fleet,
            nodes,
        }
    }
}

fn tick_event(t: &Arc<Tick>) -> SseEvent {
    SseEvent::default()
        .event("tick")
        .json_data(TickView::from(t.as_ref()))
        .unwrap_or_default()
}

/// The live feed (`text/event-stream`).
#[utoipa::path(get, path = "/api/v1/live", tag = "events",
    responses((status = 200, content_type = "text/event-stream",
        description = "`event: event` with an EventView, `event: tick` with a TickView, `event: lagged`")))]
pub async fn live(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let events = state.store.appended_events();
    let ticks = state.series.subscribe();
    // The newest bucket first, so a new client has figures at once.
    let first = state.series.latest().map(|t| tick_event(&t));
    let stream = futures_util::stream::unfold(
        (events, ticks, first),
        |(mut events, mut ticks, mut first)| async move {
            if let Some(e) = first.take() {
                return Some((Ok(e), (events, ticks, None)));
            }
            let out = tokio::select! {
                e = events.recv() => match e {
                    Ok(e) => SseEvent::default().event("event").json_data(EventView::from(e)).unwrap_or_default(),
                    Err(RecvError::Lagged(_)) => SseEvent::default().event("lagged").data("events"),
                    Err(RecvError::Closed) => return None,
                },
                t = ticks.recv() => match t {
                    Ok(t) => tick_event(&t),
                    Err(RecvError::Lagged(_)) => SseEvent::default().event("lagged").data("ticks"),
                    Err(RecvError::Closed) => return None,
                },
            };
            Some((Ok(out), (events, ticks, None)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}
