//! A backend: its servers (with their health checks, counters and pools), timeouts,
//! retries, balancing and persistence.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_proto::v1 as pb;
use xxhash_rust::xxh3::xxh3_64;

use super::{ms, Context, PlanError};
use crate::config::balance::{Algorithm, BalancePlan, HashKey};
use crate::config::cookie::CookiePlan;
use crate::config::{
    BackendPlan, CheckKind, CheckPlan, ServerPlan, TunnelTimeouts, DEFAULT_CLIENT, DEFAULT_CONNECT,
    DEFAULT_FIN, DEFAULT_RETRIES, DEFAULT_SERVER,
};

/// A duration in whole milliseconds, at most `u32::MAX` (49 days).
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Points per unit of weight on the consistent-hash ring.
const RING_POINTS_PER_WEIGHT: u32 = 40;

/// The check of a server with `check` in a backend without `health_check`.
static TCP_CHECK: pb::HealthCheck = pb::HealthCheck {
    check_type: pb::CheckType::Tcp as i32,
    method: String::new(),
    uri: String::new(),
    version: String::new(),
    headers: Vec::new(),
    expect_status: Vec::new(),
};

/// Shortest check interval and check timeout.
const MIN_CHECK: Duration = Duration::from_millis(100);

pub(super) fn compile(b: &pb::Backend, cx: &Context<'_>) -> Result<BackendPlan, PlanError> {
    let defaults = cx.defaults;
    let t = cx.timeouts(b.timeouts);
    let connect_timeout = ms(t.connect_ms).unwrap_or(DEFAULT_CONNECT);
    let server_timeout = ms(t.server_ms).unwrap_or(DEFAULT_SERVER);
    // `timeout client` is a frontend's: only the defaults' reaches a backend.
    let client_timeout = ms(cx.timeouts.client_ms).unwrap_or(DEFAULT_CLIENT);
    let server_close = b.http_server_close.unwrap_or(defaults.http_server_close);
    let servers = b
        .servers
        .iter()
        .map(|s| ServerPlan {
            name: s.name.as_str().into(),
            address: s.address.clone(),
            socket_addr: s.address.parse().ok(),
            weight: s.weight,
            backup: s.backup,
            maxconn: s.maxconn,
            cookie: (!s.cookie.is_empty()).then(|| s.cookie.as_str().into()),
            state: s.state(),
            // `check` without a backend `health_check` is a TCP connect check, as `check`
            // without `option httpchk` is in HAProxy.
            check: s.check.as_ref().map(|sc| {
                let check = b.health_check.as_ref().unwrap_or(&TCP_CHECK);
                check_plan(check, sc, &s.address, t.check_ms, connect_timeout)
            }),
            counters: cx.registry.server(&b.name, &s.name),
            pool: (!server_close).then(Arc::default),
        })
        .collect::<Vec<_>>();
    let weights: Vec<(&str, u32)> = servers.iter().map(|s| (&*s.name, s.weight)).collect();
    Ok(BackendPlan {
        name: b.name.as_str().into(),
        balancer: BalancePlan::compile(b.balance.as_ref(), &weights)?,
        servers,
        connect_timeout,
        server_timeout,
        tunnel: {
            // HAProxy: without `timeout tunnel`, the larger of client/server applies.
            let idle = ms(t.tunnel_ms).unwrap_or(server_timeout.max(client_timeout));
            let fin = |v: Option<u64>| ms(v).unwrap_or(DEFAULT_FIN).min(idle);
            TunnelTimeouts {
                idle_ms: millis(idle),
                client_fin_ms: millis(fin(t.client_fin_ms)),
                server_fin_ms: millis(fin(t.server_fin_ms)),
            }
        },
        retries: b.retries.or(defaults.retries).unwrap_or(DEFAULT_RETRIES),
        redispatch: b.redispatch.unwrap_or(defaults.redispatch),
        // HAProxy: without `timeout queue`, `timeout connect` applies.
        queue_timeout: ms(t.queue_ms).unwrap_or(connect_timeout),
        server_close,
        cookie: b.cookie.as_ref().map(CookiePlan::from),
        counters: cx.registry.backend(&b.name),
    })
}

/// One server's check: the backend's check definition with the server's interval,
/// thresholds and port. Without `timeout check`, the connect timeout bounded by the
/// interval applies.
fn check_plan(
    check: &pb::HealthCheck,
    sc: &pb::ServerCheck,
    address: &str,
    check_ms: Option<u64>,
    connect_timeout: Duration,
) -> CheckPlan {
    let inter = Duration::from_millis(sc.inter_ms).max(MIN_CHECK);
    let target = match (sc.port, address.rsplit_once(':')) {
        (Some(port), Some((host, _))) => format!("{host}:{port}"),
        _ => address.to_string(),
    };
    let kind = match check.check_type() {
        pb::CheckType::Tcp | pb::CheckType::Unspecified => CheckKind::Tcp,
        pb::CheckType::Http => CheckKind::Http,
        pb::CheckType::Websocket => CheckKind::Websocket,
    };
    let expect = if check.expect_status.is_empty() {
        if kind == CheckKind::Websocket {
            vec![(101, 101)]
        } else {
            vec![(200, 399)]
        }
    } else {
        check
            .expect_status
            .iter()
            .map(|r| (r.min as u16, r.max as u16))
            .collect()
    };
    CheckPlan {
        target,
        kind,
        method: check.method.clone(),
        uri: check.uri.clone(),
        version: check.version.clone(),
        headers: check
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
        expect,
        inter,
        timeout: ms(check_ms).unwrap_or(connect_timeout.min(inter).max(MIN_CHECK)),
        fall: sc.fall.max(1),
        rise: sc.rise.max(1),
    }
}

impl BalancePlan {
    /// A backend's balancing plan. `servers`: each server's name and weight, in order.
    pub fn compile(
        balance: Option<&pb::Balance>,
        servers: &[(&str, u32)],
    ) -> Result<BalancePlan, PlanError> {
        use pb::BalanceAlgorithm as A;
        let algo = balance.map_or(A::Roundrobin, |b| b.algorithm());
        let consistent = balance.is_some_and(|b| b.hash_type() == pb::HashType::Consistent);
        let arg = balance.map_or("", |b| b.arg.as_str());
        let hashed = |key| Algorithm::Hash { key, consistent };
        let algorithm = match algo {
            A::Unspecified | A::Roundrobin => Algorithm::RoundRobin,
            A::Leastconn => Algorithm::LeastConn,
            A::Random => Algorithm::Random,
            A::Source => hashed(HashKey::Source),
            A::Uri => hashed(HashKey::Uri),
            A::Hdr => hashed(HashKey::Header(
                http::HeaderName::from_bytes(arg.as_bytes())
                    .map_err(|_| PlanError::BalanceHeader(arg.to_string()))?,
            )),
            A::UrlParam => hashed(HashKey::UrlParam(arg.to_string())),
        };
        let ring = match &algorithm {
            Algorithm::Hash {
                consistent: true, ..
            } => ring(servers),
            _ => Vec::new(),
        };
        Ok(BalancePlan {
            algorithm,
            rr: Mutex::new(vec![0; servers.len()]),
            ring,
            turn: AtomicUsize::new(0),
        })
    }
}

/// Ring points for every server with weight, placed by the server's name (not its
/// position), so a server keeps its points when others come and go.
fn ring(servers: &[(&str, u32)]) -> Vec<(u64, usize)> {
    let mut ring = Vec::new();
    for (i, (name, weight)) in servers.iter().enumerate() {
        for k in 0..weight.saturating_mul(RING_POINTS_PER_WEIGHT) {
            let point = xxh3_64(format!("{name}#{k}").as_bytes());
            ring.push((point, i));
        }
    }
    ring.sort_unstable();
    ring
}
