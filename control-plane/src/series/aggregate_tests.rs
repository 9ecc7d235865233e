use super::*;

const CP_START: i64 = 1_000_000;

fn report(started: i64, upgrades: u64, tunnels: u64, health: pb::Health) -> pb::Stats {
    pb::Stats {
        started_unix_ms: started,
        frontends: vec![pb::FrontendStats {
            name: "web".into(),
            total_upgrades: upgrades,
            total_requests: upgrades * 2,
            current_tunnels: tunnels,
            responses_by_class: vec![0, 0, 0, 0, upgrades / 10],
            ..Default::default()
        }],
        backends: vec![pb::BackendStats {
            name: "ws".into(),
            servers: vec![pb::ServerStats {
                name: "ws-01".into(),
                total_upgrades: upgrades,
                current_tunnels: tunnels,
                connect_errors: 1,
                health: health as i32,
                health_reason: "connect: refused\nforged".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn get(point: &HashMap<String, Values>, scope: &str, m: Metric) -> u64 {
    point.get(scope).map_or(0, |v| v[m.id()])
}

#[test]
fn a_node_started_after_the_control_plane_counts_everything() {
    let mut a = Aggregator::new(CP_START);
    a.observe("edge-1", &report(CP_START + 5, 10, 3, pb::Health::Up), 0);
    let p = a.tick(0);
    assert_eq!(get(&p, "fleet", Metric::Upgrades), 10);
    assert_eq!(get(&p, "node:edge-1", Metric::Upgrades), 10);
    assert_eq!(get(&p, "frontend:web", Metric::Requests), 20);
    assert_eq!(get(&p, "server:ws/ws-01", Metric::Upgrades), 10);
    assert_eq!(get(&p, "backend:ws", Metric::Upgrades), 10);
    // Gauges: the frontend's tunnels make the node's and the fleet's, once.
    assert_eq!(get(&p, "fleet", Metric::Tunnels), 3);
    assert_eq!(get(&p, "node:edge-1", Metric::Tunnels), 3);
    assert_eq!(get(&p, "backend:ws", Metric::Tunnels), 3);
    assert_eq!(get(&p, "fleet", Metric::ServersUp), 1);
    assert_eq!(get(&p, "fleet", Metric::ErrorsConnect), 1);
    assert_eq!(get(&p, "fleet", Metric::Responses5xx), 1);
}

#[test]
fn a_node_known_from_before_a_control_plane_restart_sets_a_baseline() {
    let mut a = Aggregator::new(CP_START);
    a.observe("edge-1", &report(CP_START - 5, 500, 3, pb::Health::Up), 0);
    let p = a.tick(0);
    assert_eq!(get(&p, "fleet", Metric::Upgrades), 0, "counted before us");
    assert_eq!(get(&p, "fleet", Metric::Tunnels), 3, "gauges are current");
    a.observe("edge-1", &report(CP_START - 5, 507, 3, pb::Health::Up), 1);
    assert_eq!(get(&a.tick(1), "fleet", Metric::Upgrades), 7);
}

#[test]
fn reconnects_and_restarts_never_count_twice() {
    let mut a = Aggregator::new(CP_START);
    let started = CP_START + 1;
    a.observe("edge-1", &report(started, 10, 1, pb::Health::Up), 0);
    a.observe("edge-1", &report(started, 15, 1, pb::Health::Up), 1);
    assert_eq!(get(&a.tick(2), "fleet", Metric::Upgrades), 15);
    // The stream breaks: the node's gauges leave the point, its counters are kept.
    a.disconnected("edge-1");
    let p = a.tick(3);
    assert_eq!(get(&p, "fleet", Metric::Tunnels), 0);
    assert_eq!(get(&p, "fleet", Metric::Upgrades), 0);
    // Same process reconnects: only what it counted meanwhile.
    a.observe("edge-1", &report(started, 18, 1, pb::Health::Up), 4);
    assert_eq!(get(&a.tick(5), "fleet", Metric::Upgrades), 3);
    // The process restarted: its counters start over; 4 new upgrades, not -14.
    a.observe("edge-1", &report(started + 100, 4, 1, pb::Health::Up), 6);
    assert_eq!(get(&a.tick(7), "fleet", Metric::Upgrades), 4);
    // Even a restart that already counted past the old figure is taken from zero.
    a.observe("edge-1", &report(started + 200, 40, 1, pb::Health::Up), 8);
    assert_eq!(get(&a.tick(9), "fleet", Metric::Upgrades), 40);
}

#[test]
fn nodes_add_up_in_the_fleet() {
    let mut a = Aggregator::new(CP_START);
    for (i, node) in ["edge-1", "edge-2", "edge-3"].iter().enumerate() {
        a.observe(
            node,
            &report(CP_START + 1, 10 * (i as u64 + 1), 2, pb::Health::Up),
            0,
        );
    }
    let p = a.tick(0);
    assert_eq!(get(&p, "fleet", Metric::Upgrades), 60);
    assert_eq!(get(&p, "fleet", Metric::Tunnels), 6);
    assert_eq!(
        get(&p, "server:ws/ws-01", Metric::ServersUp),
        3,
        "one per node"
    );
    assert_eq!(get(&p, "node:edge-2", Metric::Upgrades), 20);
}

#[test]
fn health_changes_are_reported_once_with_a_one_line_reason() {
    let mut a = Aggregator::new(CP_START);
    let s = CP_START + 1;
    assert!(a
        .observe("n", &report(s, 0, 0, pb::Health::Unchecked), 0)
        .is_empty());
    assert!(a
        .observe("n", &report(s, 0, 0, pb::Health::Up), 1)
        .is_empty());
    let down = a.observe("n", &report(s, 0, 0, pb::Health::Down), 2);
    assert_eq!(
        down,
        vec![HealthChange {
            backend: "ws".into(),
            server: "ws-01".into(),
            up: false,
            reason: "connect: refused forged".into(),
        }]
    );
    assert!(a
        .observe("n", &report(s, 0, 0, pb::Health::Down), 3)
        .is_empty());
    let up = a.observe("n", &report(s, 0, 0, pb::Health::Up), 4);
    assert!(up.len() == 1 && up[0].up);
    let mut p = a.tick(5);
    assert_eq!(p.remove("fleet").unwrap()[Metric::ServersDown.id()], 0);
}
