//! Plan compilation: defaults resolved once, checks compiled into the plan, errors that
//! name the object.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1 as pb;

use crate::config::{CheckKind, Plan, PlanError};
use crate::counters::Registry;

fn server(name: &str, check: bool) -> pb::Server {
    pb::Server {
        name: name.into(),
        address: "127.0.0.1:9001".into(),
        weight: 1,
        check: check.then_some(pb::ServerCheck {
            inter_ms: 2000,
            fall: 3,
            rise: 2,
            port: Some(9100),
        }),
        ..Default::default()
    }
}

fn snapshot() -> pb::Snapshot {
    pb::Snapshot {
        version: 7,
        defaults: Some(pb::Defaults {
            timeouts: Some(pb::Timeouts {
                connect_ms: Some(1000),
                client_ms: Some(40_000),
                server_ms: Some(20_000),
                check_ms: Some(1500),
                ..Default::default()
            }),
            retries: Some(2),
            ..Default::default()
        }),
        frontends: vec![pb::Frontend {
            name: "web".into(),
            binds: vec![pb::Bind {
                address: "127.0.0.1:8080".into(),
                tls: None,
                http2: None,
            }],
            default_backend: "ws".into(),
            timeouts: Some(pb::Timeouts {
                client_ms: Some(5000),
                ..Default::default()
            }),
            ..Default::default()
        }],
        backends: vec![
            pb::Backend {
                name: "ws".into(),
                servers: vec![server("a", true), server("b", false)],
                timeouts: Some(pb::Timeouts {
                    tunnel_ms: Some(3_600_000),
                    ..Default::default()
                }),
                health_check: Some(pb::HealthCheck {
                    check_type: pb::CheckType::Websocket as i32,
                    method: "GET".into(),
                    uri: "/ws".into(),
                    version: "HTTP/1.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            pb::Backend {
                name: "api".into(),
                servers: vec![server("c", false), server("d", true)],
                timeouts: Some(pb::Timeouts {
                    server_ms: Some(50_000),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

#[test]
fn defaults_are_resolved_once_with_overrides_per_field() {
    let plan = Plan::compile(&snapshot(), &Registry::default()).unwrap();
    assert_eq!(plan.version, 7);
    let fe = &plan.frontends[0];
    assert_eq!(
        fe.client_timeout,
        Duration::from_secs(5),
        "the frontend's own"
    );
    assert_eq!(fe.http_request_timeout, Duration::from_secs(10), "built in");
    let ws = &plan.backends[0];
    assert_eq!(ws.connect_timeout, Duration::from_secs(1), "the defaults'");
    assert_eq!(ws.server_timeout, Duration::from_secs(20));
    assert_eq!(ws.tunnel.idle(), Duration::from_secs(3600));
    assert_eq!(
        ws.tunnel.current(false, true),
        Duration::from_secs(30),
        "client-fin default"
    );
    assert_eq!(
        ws.queue_timeout, ws.connect_timeout,
        "queue falls back to connect"
    );
    assert_eq!(ws.retries, 2);
    // Without `timeout tunnel`: the larger of the defaults' client and server timeouts.
    let api = &plan.backends[1];
    assert_eq!(api.server_timeout, Duration::from_secs(50));
    assert_eq!(api.tunnel.idle(), Duration::from_secs(50));
    assert!(Arc::ptr_eq(
        fe.default_backend.as_ref().unwrap(),
        &plan.backends[0]
    ));
}

#[test]
fn health_checks_are_compiled_into_the_plan() {
    let plan = Plan::compile(&snapshot(), &Registry::default()).unwrap();
    let ws = &plan.backends[0];
    let check = ws.servers[0].check.as_ref().expect("server a is checked");
    assert_eq!(check.kind, CheckKind::Websocket);
    assert_eq!(
        check.target, "127.0.0.1:9100",
        "the check port replaces the server's"
    );
    assert_eq!(check.expect, vec![(101, 101)]);
    assert_eq!(check.inter, Duration::from_secs(2));
    assert_eq!(check.timeout, Duration::from_millis(1500));
    assert_eq!((check.fall, check.rise), (3, 2));
    assert!(ws.servers[1].check.is_none(), "server b has no check");
    assert!(
        plan.backends[1].servers[0].check.is_none(),
        "server c has no check"
    );
    // `check` without a backend health check: a TCP connect check.
    let tcp = plan.backends[1].servers[1].check.as_ref().unwrap();
    assert_eq!(
        (tcp.kind, tcp.target.as_str()),
        (CheckKind::Tcp, "127.0.0.1:9100")
    );
}

#[test]
fn counters_carry_over_between_plans_by_name() {
    let registry = Registry::default();
    let one = Plan::compile(&snapshot(), &registry).unwrap();
    let two = Plan::compile(&snapshot(), &registry).unwrap();
    assert!(Arc::ptr_eq(
        &one.backends[0].servers[0].counters,
        &two.backends[0].servers[0].counters
    ));
    assert!(Arc::ptr_eq(
        &one.frontends[0].counters,
        &two.frontends[0].counters
    ));
}

#[test]
fn errors_name_the_object() {
    let mut snap = snapshot();
    snap.frontends[0].default_backend = "missing".into();
    let err = Plan::compile(&snap, &Registry::default()).unwrap_err();
    assert!(matches!(err, PlanError::Frontend { .. }));
    assert_eq!(
        err.to_string(),
        "frontend web: no backend named \"missing\""
    );

    let mut snap = snapshot();
    snap.backends[1].balance = Some(pb::Balance {
        algorithm: pb::BalanceAlgorithm::Hdr as i32,
        arg: "bad header".into(),
        ..Default::default()
    });
    let err = Plan::compile(&snap, &Registry::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "backend api: balance hdr(bad header): bad header name"
    );

    let mut snap = snapshot();
    let bind = snap.frontends[0].binds[0].clone();
    snap.frontends[0].binds.push(bind);
    let err = Plan::compile(&snap, &Registry::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "frontend web: bind 127.0.0.1:8080 is used twice"
    );

    let mut snap = snapshot();
    snap.frontends[0].http_request.push(pb::HttpRequestRule {
        action: Some(pb::http_request_rule::Action::ReplaceHeader(
            pb::ReplaceHeader {
                name: "host".into(),
                regex: "(".into(),
                replacement: String::new(),
            },
        )),
        cond: None,
    });
    let err = Plan::compile(&snap, &Registry::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("frontend web: regex parse error"),
        "{err}"
    );
}
