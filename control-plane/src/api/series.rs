//! `/api/v1/series`: the traffic history, column-wise (one time per bucket, one column
//! per metric), ready for a chart.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState};
use crate::clock::unix_ms;
use crate::config::compile::valid_name;
use crate::series::metric::Metric;
use crate::series::{SeriesError, SeriesQuery};

#[derive(Debug, Deserialize, IntoParams)]
pub struct SeriesParams {
    /// One or more metrics, comma-separated: gauges `connections`, `tunnels`, `queued`,
    /// `servers_up`, `servers_down` (a bucket's mean); counters `upgrades`, `requests`,
    /// `responses_1xx`…`responses_5xx`, `denied`, `bytes_in`, `bytes_out`,
    /// `errors_connect`, `errors_timeout`, `errors_bad_response`, `errors_no_server`,
    /// `errors_queue_timeout`, `errors_bad_request`, `errors_tls` (per second).
    pub metric: String,
    /// `fleet` (default), `node:<id>`, `frontend:<name>`, `backend:<name>` or
    /// `server:<backend>/<server>`.
    pub scope: Option<String>,
    /// Start: Unix ms, RFC 3339, or relative to now (`-15m`, `now-7d`). Default: 15
    /// minutes before `to`.
    pub from: Option<String>,
    /// End: as `from`; default now.
    pub to: Option<String>,
    /// Bucket (`10s`, `1m`, `10m`, ...), rounded up to a multiple of the tier read.
    /// Default: about 300 points over the range.
    pub step: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesColumn {
    pub metric: String,
    /// `gauge` (mean level over the bucket) or `rate` (per second over the bucket).
    pub kind: &'static str,
    /// One value per time; null where the control plane was not recording.
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesView {
    pub scope: String,
    pub step_ms: i64,
    /// The bucket of the stored tier the points come from (10 s, 1 min or 10 min).
    pub tier_step_ms: i64,
    /// Bucket starts, Unix ms.
    pub times: Vec<i64>,
    pub series: Vec<SeriesColumn>,
}

fn bad(field: &str, message: String) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_query",
        field: field.into(),
        message,
    }
}

/// A time as Unix ms: digits, RFC 3339, `now`, or `[now]-<duration>`.
fn time(text: &str, field: &str, now: i64) -> Result<i64, ApiError> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Some(ago) = text.strip_prefix("now-").or_else(|| text.strip_prefix('-')) {
        let d = humantime::parse_duration(ago)
            .map_err(|e| bad(field, format!("{ago:?} is not a duration such as 15m: {e}")))?;
        return Ok(now - d.as_millis() as i64);
    }
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(text)
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        })
        .map_err(|_| {
            bad(
                field,
                format!("{text:?} is not Unix ms, RFC 3339 or a relative time such as -15m"),
            )
        })
}

fn scope_ok(scope: &str) -> bool {
    if scope == "fleet" {
        return true;
    }
    match scope.split_once(':') {
        Some(("server", rest)) => rest
            .split_once('/')
            .is_some_and(|(b, s)| valid_name(b) && valid_name(s)),
        Some(("node" | "frontend" | "backend", name)) => valid_name(name),
        _ => false,
    }
}

/// Time series of one scope over a range.
#[utoipa::path(get, path = "/api/v1/series", tag = "series", params(SeriesParams),
    responses((status = 200, body = SeriesView), (status = 400, body = super::error::ErrorBody)))]
pub async fn get_series(
    State(state): State<AppState>,
    query: Result<Query<SeriesParams>, QueryRejection>,
) -> Result<Json<SeriesView>, ApiError> {
    let p = super::query(query)?;
    let now = unix_ms();
    let metrics = p
        .metric
        .split(',')
        .map(|name| {
            Metric::parse(name.trim())
                .ok_or_else(|| bad("metric", format!("unknown metric {name:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let scope = p.scope.unwrap_or_else(|| "fleet".into());
    if !scope_ok(&scope) {
        return Err(bad(
            "scope",
            format!("{scope:?} is not fleet, node:<id>, frontend:<name>, backend:<name> or server:<backend>/<server>"),
        ));
    }
    let to_ms = p.to.as_deref().map_or(Ok(now), |t| time(t, "to", now))?;
    let from_ms = p
        .from
        .as_deref()
        .map_or(Ok(to_ms - 15 * 60_000), |t| time(t, "from", now))?;
    let step_ms = p
        .step
        .as_deref()
        .map(|s| {
            humantime::parse_duration(s)
                .map(|d| d.as_millis() as i64)
                .map_err(|e| bad("step", format!("{s:?} is not a duration such as 1m: {e}")))
        })
        .transpose()?;
    let q = SeriesQuery {
        scope: scope.clone(),
        metrics,
        from_ms,
        to_ms,
        step_ms,
    };
    let table = state.series.query(&q, now).await.map_err(|e| match e {
        SeriesError::BadQuery { field, message } => bad(field, message),
        SeriesError::Store(e) => e.into(),
    })?;
    Ok(Json(SeriesView {
        scope,
        step_ms: table.step_ms,
        tier_step_ms: table.tier_step_ms,
        times: table.times,
        series: table
            .columns
            .into_iter()
            .map(|(m, values)| SeriesColumn {
                metric: m.name().into(),
                kind: if m.is_gauge() { "gauge" } else { "rate" },
                values,
            })
            .collect(),
    }))
}
