//! Several control-plane replicas on one PostgreSQL database, through the real binaries:
//! a write to one replica reaches the nodes of the other at once; writers on both never
//! both win; the fleet view (with each node's traffic) and the live feed (events and
//! buckets) are the same on either, and the dashboard shows where each node is; and when a replica is killed its nodes
//! move to the other without losing a tunnel; while the database is down, writes get 503,
//! nodes keep serving, and a node restarted meanwhile is let in on its credential.

use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::browser;
use sluice_tests::harness::{
    any_port, eventually, postgres_database, simple_config, ws_connect, ws_roundtrip, Api,
    ControlPlane, DataPlane,
};
use sluice_tests::live::live_until;
use sluice_tests::replica;

const WAIT: Duration = Duration::from_secs(15);

async fn replica_of(api: &Api, node: &str) -> Option<(bool, String)> {
    let n = api.node(node).await?;
    Some((n["connected"] == true, n["replica"].as_str()?.to_string()))
}

#[tokio::test]
async fn two_replicas_share_the_fleet_and_nodes_fail_over() {
    let Some(url) = postgres_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let backend = sluice_tests::backend::Backend::start("alpha", "127.0.0.1:0")
        .await
        .unwrap();
    let mut a = replica::start(dir.path(), &url, "cp-a");
    let b = replica::start(dir.path(), &url, "cp-b");
    let (api_a, api_b) = (a.api(), b.api());
    let both_a = replica::endpoints(&a, &b);
    let both_b = replica::endpoints(&b, &a);
    let token = a.node_token.clone();
    let n1 =
        DataPlane::start_with_args(dir.path(), &a, "n1", &token, &["--control-plane", &both_a]);
    let _n2 =
        DataPlane::start_with_args(dir.path(), &b, "n2", &token, &["--control-plane", &both_b]);
    let _n3 =
        DataPlane::start_with_args(dir.path(), &a, "n3", &token, &["--control-plane", &both_a]);

    // A write to replica A reaches the node on replica B within a second.
    let configured = any_port("127.0.0.1");
    let doc = simple_config(configured, &[("pool", &[backend.addr])], "pool");
    for id in ["n1", "n2", "n3"] {
        api_a.wait_applied(id, 1, WAIT).await;
    }
    let written = Instant::now();
    let v = api_a.put_config(&doc).await;
    api_b.wait_applied("n2", v, Duration::from_secs(1)).await;
    eprintln!(
        "figures: replica A's write applied by replica B's node in {:?}",
        written.elapsed()
    );
    for id in ["n1", "n3"] {
        api_a.wait_applied(id, v, WAIT).await;
    }

    // The fleet view is the same on both replicas: every node connected, and on which.
    for api in [&api_a, &api_b] {
        for (node, replica) in [("n1", "cp-a"), ("n2", "cp-b"), ("n3", "cp-a")] {
            eventually(WAIT, &format!("{node} on {replica}"), || async {
                (replica_of(api, node).await? == (true, replica.to_string())).then_some(())
            })
            .await;
        }
    }

    // One fleet on either replica: B's live feed carries what A records and a bucket
    // with the tunnel through A's node n1, and B's fleet view shows n1's traffic.
    let n1_bind = n1.bound(configured).await;
    let mut tunnel = ws_connect(n1_bind, "/ws").await;
    assert_eq!(ws_roundtrip(&mut tunnel, "before").await, "before");
    let (b_base, b_token) = (b.api.clone(), b.admin_token.clone());
    let feed = tokio::spawn(async move {
        let mut committed = None;
        let mut tick = None;
        live_until(&b_base, &b_token, Duration::from_secs(30), |kind, v| {
            if kind == "event" && v["kind"] == "version_committed" {
                committed = v["version"].as_u64();
            }
            if kind == "tick" && v["nodes"]["n1"]["tunnels"] == 1.0 {
                tick = Some(v.clone());
            }
            committed.zip(tick.clone())
        })
        .await
    });
    tokio::pin!(feed);
    // Writes through A until B's feed (connecting meanwhile) has heard of one.
    let mut next = doc.clone();
    let mut via_a = Vec::new();
    let (heard, tick) = loop {
        next["defaults"]["timeouts"]["server"] = Value::from(format!("{}s", 40 + via_a.len()));
        via_a.push(api_a.put_config(&next).await);
        tokio::select! {
            r = &mut feed => break r.unwrap(),
            _ = tokio::time::sleep(Duration::from_secs(1)) => assert!(via_a.len() < 40),
        }
    };
    assert!(
        via_a.contains(&heard),
        "B's feed carries A's commits: {heard} in {via_a:?}"
    );
    assert!(tick["fleet"]["tunnels"].as_f64().unwrap() >= 1.0, "{tick}");
    eventually(WAIT, "n1's tunnel in B's fleet view", || async {
        let n = api_b.node("n1").await?;
        (n["traffic"]["current_tunnels"] == 1 && n["replica"] == "cp-a").then_some(())
    })
    .await;

    // The dashboard on B, in a browser: every node online, on its replica.
    let (b_api, b_admin) = (b.api.clone(), b.admin_token.clone());
    let dashboard = |fleet: &'static str| {
        let (url, token) = (b_api.clone(), b_admin.clone());
        async move {
            browser::run(
                "fleet.mjs",
                &[
                    ("SLUICE_URL", &url),
                    ("SLUICE_TOKEN", &token),
                    ("SLUICE_FLEET", fleet),
                ],
            )
            .await
        }
    };
    dashboard("n1=cp-a,n2=cp-b,n3=cp-a").await;

    // Writers on both replicas at once: one wins each round, the other gets 412.
    let before_rounds = api_a.version().await;
    for round in 0..10 {
        let version = api_a.version().await;
        let tag = format!("\"{version}\"");
        next["defaults"]["timeouts"]["server"] = Value::from(format!("{}s", 31 + round));
        let mut other = next.clone();
        other["defaults"]["timeouts"]["client"] = Value::from(format!("{}s", 31 + round));
        let (ra, rb) = tokio::join!(
            api_a.request("PUT", "/api/v1/config", Some(&next), Some(&tag)),
            api_b.request("PUT", "/api/v1/config", Some(&other), Some(&tag)),
        );
        let mut statuses = [ra.status, rb.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [200, 412],
            "round {round}: {} / {}",
            ra.json,
            rb.json
        );
    }
    let history = api_b.get("/api/v1/snapshots?limit=100").await.json;
    let versions: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["version"].as_u64().unwrap())
        .collect();
    let mut unique = versions.clone();
    unique.dedup();
    assert_eq!(unique, versions, "no version number twice");
    assert_eq!(versions[0], before_rounds + 10, "one version per round");

    // Replica A dies: its nodes move to B, and the tunnel through n1 lives on.
    a.proc.kill();
    for node in ["n1", "n2", "n3"] {
        eventually(
            WAIT,
            &format!("{node} on cp-b after the failover"),
            || async {
                (replica_of(&api_b, node).await? == (true, "cp-b".to_string())).then_some(())
            },
        )
        .await;
    }
    assert_eq!(ws_roundtrip(&mut tunnel, "after").await, "after");
    dashboard("n1=cp-b,n2=cp-b,n3=cp-b").await;
    // Replica B serves writes to all three.
    next["defaults"]["timeouts"]["tunnel"] = Value::from("2h");
    let w = api_b.put_config(&next).await;
    for id in ["n1", "n2", "n3"] {
        api_b.wait_applied(id, w, WAIT).await;
    }
}

/// A PostgreSQL server of this test's own, so that it can be stopped.
struct OwnServer {
    url: String,
    dir: String,
}

impl OwnServer {
    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres.sh")
    }

    fn start() -> OwnServer {
        let out = std::process::Command::new(Self::script())
            .output()
            .expect("scripts/postgres.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let (url, dir) = text.trim().split_once(' ').expect("URL and directory");
        OwnServer {
            url: url.to_string(),
            dir: dir.to_string(),
        }
    }

    fn run(&self, verb: &str) {
        let ok = std::process::Command::new(Self::script())
            .args([verb, &self.dir])
            .status()
            .expect("scripts/postgres.sh")
            .success();
        assert!(ok, "postgres.sh {verb}");
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::script())
            .args(["stop", &self.dir])
            .status();
    }
}

#[tokio::test]
async fn while_the_database_is_down_writes_get_503_and_nodes_keep_serving() {
    // Only where the test command provides PostgreSQL (it installs the server).
    if postgres_database().await.is_none() {
        return;
    }
    let db = OwnServer::start();
    let dir = tempfile::tempdir().unwrap();
    let backend = sluice_tests::backend::Backend::start("alpha", "127.0.0.1:0")
        .await
        .unwrap();
    let cp = ControlPlane::start_with_args(dir.path(), &["--database", &db.url]);
    let node = DataPlane::start(dir.path(), &cp, "n1");
    // A node that keeps its credential (and last plan) in a state directory.
    let state = dir.path().join("n2-state");
    let state_arg = state.display().to_string();
    let n2_args = ["--state-dir", state_arg.as_str()];
    let token = cp.node_token.clone();
    let mut n2 = DataPlane::start_with_args(dir.path(), &cp, "n2", &token, &n2_args);
    let api = cp.api();
    let configured = any_port("127.0.0.1");
    let doc = simple_config(configured, &[("pool", &[backend.addr])], "pool");
    let v = api.put_config(&doc).await;
    api.wait_applied("n1", v, WAIT).await;
    api.wait_applied("n2", v, WAIT).await;
    let bind = node.bound(configured).await;
    let mut tunnel = ws_connect(bind, "/ws").await;

    db.run("pause");
    // Restarted during the outage, n2 is let in on its credential as last read and serves.
    n2.proc.kill();
    let n2 = DataPlane::start_with_args(dir.path(), &cp, "n2", &token, &n2_args);
    eventually(WAIT, "n2 back on its control plane", || async {
        n2.proc
            .log_text()
            .contains("connected to the control plane")
            .then_some(())
    })
    .await;
    let n2_bind = n2.bound(configured).await;
    let mut via_n2 = ws_connect(n2_bind, "/ws").await;
    assert_eq!(ws_roundtrip(&mut via_n2, "n2").await, "n2");
    let mut next = doc.clone();
    next["defaults"]["timeouts"]["tunnel"] = Value::from("2h");
    // Ten seconds without the database: every write is refused with 503 and changes
    // nothing; the node serves the tunnel it has and new ones.
    let outage = Instant::now();
    let mut checks = 0;
    while outage.elapsed() < Duration::from_secs(10) {
        let r = api
            .request("PUT", "/api/v1/config", Some(&next), None)
            .await;
        assert_eq!(r.status, 503, "{}", r.json);
        assert_eq!(r.json["code"], "database_unavailable");
        assert_eq!(ws_roundtrip(&mut tunnel, "still").await, "still");
        let mut fresh = ws_connect(bind, "/ws").await;
        assert_eq!(ws_roundtrip(&mut fresh, "new").await, "new");
        checks += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(checks >= 3, "{checks} checks in 10 s");

    // The database is back: writes go through again and reach the node.
    db.run("resume");
    let w = eventually(WAIT, "a write accepted again", || async {
        let r = api
            .request("PUT", "/api/v1/config", Some(&next), None)
            .await;
        (r.status == 200).then(|| r.json["version"].as_u64().unwrap())
    })
    .await;
    assert_eq!(w, v + 1, "nothing was stored during the outage");
    api.wait_applied("n1", w, WAIT).await;
    api.wait_applied("n2", w, WAIT).await;
    assert_eq!(ws_roundtrip(&mut tunnel, "after").await, "after");
}
