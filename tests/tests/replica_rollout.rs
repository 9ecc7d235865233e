//! A staged rollout with two control-plane replicas on one PostgreSQL database, through
//! the real binaries: the replica that leads reads the canary's counters from the other
//! replica's records and rolls a bad version back; nodes on both replicas run what the
//! leader assigns; operators' commands sent to the replica that does not lead take
//! effect; and when the leader is killed mid-rollout the other replica takes the rollout
//! over at its stage, the nodes not reached never running the new version.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::harness::{
    any_port, closed_addr, eventually, postgres_database, simple_config, Api, DataPlane,
};
use sluice_tests::replica;
use sluice_tests::traffic::Traffic;

const WAIT: Duration = Duration::from_secs(20);
const NODES: [&str; 4] = ["canary", "n2", "n3", "n4"];

fn policy(canary_bake: &str, min_requests: u64) -> Value {
    json!({
        "stages": [
            { "name": "canary", "select": { "labels": { "zone": "canary" } }, "bake": canary_bake },
            { "name": "all", "select": { "share": 100 }, "bake": "1s" }
        ],
        "gates": { "max_error_rate_increase": 0.05, "min_requests": min_requests, "max_servers_down": 0.5 }
    })
}

async fn rollout_on(api: &Api, version: u64, state: &str) -> Value {
    eventually(
        WAIT,
        &format!("the rollout of {version} to be {state}"),
        || async {
            let r = api.get(&format!("/api/v1/rollouts/{version}")).await;
            (r.json["state"] == state).then_some(r.json)
        },
    )
    .await
}

async fn applied(api: &Api, node: &str) -> u64 {
    api.node(node).await.expect("the node")["applied_version"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_rollout_is_led_by_one_replica_and_survives_its_leader() {
    let Some(url) = postgres_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let backend = sluice_tests::backend::Backend::start("app", "127.0.0.1:0")
        .await
        .unwrap();

    // Replica A takes the lease before B exists: A leads.
    let mut a = replica::start(dir.path(), &url, "cp-a");
    eventually(WAIT, "replica A to lead", || async {
        a.proc
            .log_text()
            .contains("this replica leads rollouts")
            .then_some(())
    })
    .await;
    let b = replica::start(dir.path(), &url, "cp-b");
    let (api_a, api_b) = (a.api(), b.api());
    let on_a = replica::endpoints(&a, &b);
    let on_b = replica::endpoints(&b, &a);
    let token = a.node_token.clone();
    // The canary and n3 on the replica that does not lead, n2 and n4 on the leader.
    let start = |id: &str, endpoints: &str, zone: &str| {
        DataPlane::start_with_args(
            dir.path(),
            &a,
            id,
            &token,
            &["--control-plane", endpoints, "--labels", zone],
        )
    };
    let nodes = [
        start("canary", &on_b, "zone=canary"),
        start("n2", &on_a, "zone=main"),
        start("n3", &on_b, "zone=main"),
        start("n4", &on_a, "zone=main"),
    ];

    let configured = any_port("127.0.0.1");
    let base = simple_config(configured, &[("app", &[backend.addr])], "app");
    let base_version = api_b.put_config(&base).await;
    for id in NODES {
        api_a.wait_applied(id, base_version, WAIT).await;
    }
    let mut binds: Vec<(String, SocketAddr)> = Vec::new();
    for dp in &nodes {
        binds.push((dp.node_id.clone(), dp.bound(configured).await));
    }
    // The policy is written through B; the leader (A) follows it.
    let r = api_b
        .request(
            "PUT",
            "/api/v1/rollout-policy",
            Some(&policy("30s", 10)),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let traffic = Traffic::start(binds);

    // A bad version: the canary (on B) fails its requests; A reads that from B's records
    // and rolls the version back within the canary's bake.
    let mut bad = base.clone();
    bad["backends"][0]["servers"][0]["address"] = json!(closed_addr().to_string());
    let v = api_a.put_config(&bad).await;
    let rolled = rollout_on(&api_b, v, "rolled_back").await;
    assert_eq!(rolled["leader"], "cp-a", "{rolled}");
    assert!(
        rolled["reason"].as_str().unwrap().contains("error rate"),
        "{rolled}"
    );
    assert_eq!(rolled["stages"][0]["nodes"], json!(["canary"]), "{rolled}");
    let back = rolled["rollback_version"].as_u64().unwrap();
    for id in NODES {
        api_b.wait_applied(id, back, WAIT).await;
    }
    for id in &NODES[1..] {
        assert_eq!(traffic.failures(id), 0, "{id} failed requests");
    }
    assert!(traffic.failures("canary") > 0);

    // A good version with a long canary stage, written through B. (A request the canary
    // began on the bad version may end, and count, after it runs the good one: the gate
    // wants more requests than that one.)
    let r = api_b
        .request(
            "PUT",
            "/api/v1/rollout-policy",
            Some(&policy("1h", 100)),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let mut good = base.clone();
    good["backends"][0]["servers"][0]["weight"] = json!(50);
    let w = api_b.put_config(&good).await;
    let running = rollout_on(&api_b, w, "running").await;
    assert_eq!(running["leader"], "cp-a", "{running}");
    api_b.wait_applied("canary", w, WAIT).await;
    // Both replicas say who runs what: the canary the new version, the others the old.
    for api in [&api_a, &api_b] {
        eventually(WAIT, "the nodes' targets on both replicas", || async {
            let nodes = api.get("/api/v1/nodes").await.json;
            nodes
                .as_array()?
                .iter()
                .all(|n| {
                    let want = if n["id"] == "canary" { w } else { back };
                    n["target_version"] == want && n["applied_version"] == want
                })
                .then_some(())
        })
        .await;
    }

    // Commands through the replica that does not lead take effect at the leader.
    let post = |api: &Api, action: &str| {
        let (api, path) = (api.clone(), format!("/api/v1/rollouts/{w}/{action}"));
        async move { api.request("POST", &path, None, None).await }
    };
    let r = post(&api_b, "pause").await;
    assert_eq!((r.status, r.json["state"].as_str()), (200, Some("paused")));
    rollout_on(&api_a, w, "paused").await;
    assert_eq!(post(&api_b, "pause").await.status, 409);
    let r = post(&api_b, "resume").await;
    assert_eq!((r.status, r.json["state"].as_str()), (200, Some("running")));

    // The leader dies mid-rollout: B takes the rollout over at its stage; the nodes it
    // had not reached still run the old version.
    a.proc.kill();
    let mut taken = Value::Null;
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        let r = api_b.get(&format!("/api/v1/rollouts/{w}")).await;
        if r.json["leader"] == "cp-b" {
            taken = r.json;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if taken.is_null() {
        b.proc.dump_log();
        panic!("replica B did not take the rollout over within {WAIT:?}");
    }
    assert_eq!(taken["state"], "running", "{taken}");
    assert_eq!(taken["stage"], 0, "{taken}");
    for id in ["n2", "n4"] {
        eventually(WAIT, &format!("{id} on cp-b"), || async {
            (api_b.node(id).await?["replica"] == "cp-b").then_some(())
        })
        .await;
    }
    // B has led for a while (its bake time restarted at the takeover): still only the
    // canary runs the new version.
    eventually(WAIT, "B's rollout to bake", || async {
        let r = api_b.get(&format!("/api/v1/rollouts/{w}")).await;
        (r.json["baked_ms"].as_u64()? >= 1500).then_some(())
    })
    .await;
    for id in &NODES[1..] {
        assert_eq!(applied(&api_b, id).await, back, "{id} is not reached");
    }
    assert_eq!(applied(&api_b, "canary").await, w);
    let r = post(&api_b, "promote").await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["state"], "completed");
    for id in NODES {
        api_b.wait_applied(id, w, WAIT).await;
    }
    drop(traffic);
}
