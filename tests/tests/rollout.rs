//! Staged rollout through the real binaries: five nodes, one labelled `zone=canary`, a
//! three-stage policy; a healthy version advances stage by stage to every node, a
//! version whose servers refuse connections is rolled back from the canary within its
//! bake time (the other nodes never run it, and keep serving), and operators pause,
//! resume, promote and abort through the API.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::harness::{
    any_port, closed_addr, eventually, ids, simple_config, Api, DataPlane, Fixture,
};
use sluice_tests::traffic::Traffic;

const WAIT: Duration = Duration::from_secs(20);
const NODES: [&str; 5] = ["node-a", "node-b", "node-c", "node-d", "node-e"];

struct Fleet {
    f: Fixture,
    others: Vec<DataPlane>,
    /// Where each node accepts the configured bind.
    binds: Vec<(String, SocketAddr)>,
    base: Value,
    base_version: u64,
}

impl Fleet {
    /// Five nodes (`node-a` the canary) running one configuration, no policy yet.
    async fn start() -> Fleet {
        let f = Fixture::start_with(&["app-01"], &[], &["--labels", "zone=canary"]).await;
        let others: Vec<DataPlane> = NODES[1..]
            .iter()
            .map(|id| {
                DataPlane::start_with_args(
                    f.dir(),
                    &f.cp,
                    id,
                    &f.cp.node_token.clone(),
                    &["--labels", "zone=main"],
                )
            })
            .collect();
        let configured = any_port("127.0.0.1");
        let base = simple_config(configured, &[("app", &[f.backend("app-01").addr])], "app");
        let api = f.cp.api();
        let base_version = api.put_config(&base).await;
        for id in NODES {
            api.wait_applied(id, base_version, WAIT).await;
        }
        let mut binds = vec![("node-a".to_string(), f.dp.bound(configured).await)];
        for dp in &others {
            binds.push((dp.node_id.clone(), dp.bound(configured).await));
        }
        Fleet {
            f,
            others,
            binds,
            base,
            base_version,
        }
    }

    fn api(&self) -> Api {
        self.f.cp.api()
    }

    async fn set_policy(&self, policy: &Value) -> Value {
        let r = self
            .api()
            .request("PUT", "/api/v1/rollout-policy", Some(policy), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        r.json
    }

    /// Requests through every node until dropped.
    fn traffic(&self) -> Traffic {
        Traffic::start(self.binds.clone())
    }

    async fn rollout(&self, version: u64) -> Value {
        let r = self.api().get(&format!("/api/v1/rollouts/{version}")).await;
        assert_eq!(r.status, 200, "{}", r.json);
        r.json
    }

    async fn wait_state(&self, version: u64, state: &str) -> Value {
        eventually(
            WAIT,
            &format!("the rollout of {version} to be {state}"),
            // The rollout starts just after the commit: until then there is none (404).
            || async {
                let r = self.api().get(&format!("/api/v1/rollouts/{version}")).await;
                (r.json["state"] == state).then_some(r.json)
            },
        )
        .await
    }
}

fn policy(canary_bake: &str, min_requests: u64) -> Value {
    json!({
        "stages": [
            { "name": "canary", "select": { "labels": { "zone": "canary" } }, "bake": canary_bake },
            { "name": "most", "select": { "share": 60 }, "bake": "1s" },
            { "name": "all", "select": { "share": 100 }, "bake": "1s" }
        ],
        "gates": { "max_error_rate_increase": 0.05, "min_requests": min_requests, "max_servers_down": 0.5 }
    })
}

async fn events_of(api: &Api, version: u64) -> Vec<Value> {
    let list = api.get("/api/v1/events?limit=500").await.json;
    list["events"]
        .as_array()
        .or(list.as_array())
        .unwrap()
        .iter()
        .filter(|e| e["version"] == version)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_three_stage_rollout_advances_stage_by_stage_when_healthy() {
    let fleet = Fleet::start().await;
    let api = fleet.api();
    assert_eq!(fleet.set_policy(&policy("2s", 20)).await["revision"], 1);
    let traffic = fleet.traffic();

    let mut next = fleet.base.clone();
    next["backends"][0]["servers"][0]["weight"] = json!(50);
    // Only the canary is waited for; the others are staged.
    let r = api
        .request(
            "PUT",
            "/api/v1/config?wait=live&timeout=10s",
            Some(&next),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let v = r.json["version"].as_u64().unwrap();
    assert_eq!(ids(&r.json["live"]["acked"]), ["node-a"]);
    assert_eq!(
        ids(&r.json["live"]["staged"]),
        ["node-b", "node-c", "node-d", "node-e"]
    );
    // During the canary stage the fleet view says who runs which version.
    let nodes = api.get("/api/v1/nodes").await.json;
    for n in nodes.as_array().unwrap() {
        let want = if n["id"] == "node-a" {
            v
        } else {
            fleet.base_version
        };
        assert_eq!(n["target_version"], want, "{n}");
        assert_eq!(n["applied_version"], want, "{n}");
    }
    let running = fleet.rollout(v).await;
    assert_eq!(running["state"], "running");
    assert_eq!(running["from_version"], fleet.base_version);
    assert_eq!(ids(&running["stages"][0]["nodes"]), ["node-a"]);

    let done = fleet.wait_state(v, "completed").await;
    for id in NODES {
        api.wait_applied(id, v, WAIT).await;
    }
    // 60 % of five nodes: the canary and two more; then every node.
    assert_eq!(done["stages"][1]["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(done["stages"][2]["nodes"].as_array().unwrap().len(), 5);
    for s in done["stages"].as_array().unwrap() {
        assert!(s["passed_unix_ms"].as_i64().is_some(), "{s}");
        assert_eq!(s["reading"]["errors"], 0, "{s}");
    }
    // The canary's stage measured real traffic.
    assert!(
        done["stages"][0]["reading"]["requests"].as_u64().unwrap() >= 20,
        "{done}"
    );
    let kinds: Vec<String> = events_of(&api, v)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    for kind in ["rollout_started", "rollout_stage", "rollout_completed"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    drop(traffic);
    let _ = &fleet.others;
}

#[tokio::test]
async fn a_canary_whose_servers_refuse_is_rolled_back_within_its_bake_time() {
    let fleet = Fleet::start().await;
    let api = fleet.api();
    fleet.set_policy(&policy("30s", 10)).await;
    let traffic = fleet.traffic();

    // The new version points the backend at a port nothing listens on.
    let mut bad = fleet.base.clone();
    bad["backends"][0]["servers"][0]["address"] = json!(closed_addr().to_string());
    let v = api.put_config(&bad).await;
    let rolled = fleet.wait_state(v, "rolled_back").await;
    let reason = rolled["reason"].as_str().unwrap();
    assert!(reason.contains("error rate"), "{reason}");
    assert_eq!(rolled["stage"], 0);
    // Within the canary's bake time: no later stage ever started.
    let started = rolled["stages"][0]["started_unix_ms"].as_i64().unwrap();
    let finished = rolled["finished_unix_ms"].as_i64().unwrap();
    assert!(finished - started < 30_000, "{rolled}");
    assert!(rolled["stages"][1]["started_unix_ms"].is_null());

    // The configuration is committed back as a new version, which every node runs.
    let back = rolled["rollback_version"].as_u64().unwrap();
    assert!(back > v);
    for id in NODES {
        api.wait_applied(id, back, WAIT).await;
    }
    let (_, now) = {
        let r = api.get("/api/v1/config").await;
        (r.status, r.json)
    };
    assert_eq!(
        now["backends"][0]["servers"][0]["address"],
        fleet.base["backends"][0]["servers"][0]["address"]
    );
    // The bad version reached only the canary; the others never applied it and served
    // throughout.
    let events = events_of(&api, v).await;
    let acked: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "version_acked")
        .map(|e| e["node"].as_str().unwrap())
        .collect();
    assert_eq!(acked, ["node-a"]);
    let why = events
        .iter()
        .find(|e| e["kind"] == "rollout_rolled_back")
        .expect("a rollout_rolled_back event");
    assert!(
        why["detail"].as_str().unwrap().contains("error rate"),
        "{why}"
    );
    let rollback_commit = api.get(&format!("/api/v1/snapshots/{back}")).await.json;
    assert_eq!(rollback_commit["actor"], "rollout", "{rollback_commit}");
    // A rollback goes to every node at once: no rollout of its own.
    assert_eq!(
        api.get(&format!("/api/v1/rollouts/{back}")).await.status,
        404
    );
    for id in &NODES[1..] {
        assert_eq!(traffic.failures(id), 0, "{id} failed requests");
    }
    assert!(traffic.failures("node-a") > 0);
}

#[tokio::test]
async fn operators_pause_resume_promote_and_abort() {
    let fleet = Fleet::start().await;
    let api = fleet.api();
    // A bad policy is refused with the field named, and nothing is stored.
    let mut bad = policy("1h", 20);
    bad["stages"][1]["select"]["share"] = json!(0);
    let r = api
        .request("PUT", "/api/v1/rollout-policy", Some(&bad), None)
        .await;
    assert_eq!(r.status, 422, "{}", r.json);
    assert_eq!(r.json["errors"][0]["field"], "stages[1].select.share");
    assert_eq!(api.get("/api/v1/rollout-policy").await.json["revision"], 0);
    let r = api
        .request(
            "PUT",
            "/api/v1/rollout-policy",
            Some(&policy("1h", 20)),
            None,
        )
        .await;
    assert_eq!(r.status, 200);

    // Pause and resume hold the rollout at its stage; promote sends it everywhere.
    let mut next = fleet.base.clone();
    next["backends"][0]["servers"][0]["weight"] = json!(10);
    let v = api.put_config(&next).await;
    api.wait_applied("node-a", v, WAIT).await;
    let post = |action: &str| {
        let api = api.clone();
        let path = format!("/api/v1/rollouts/{v}/{action}");
        async move { api.request("POST", &path, None, None).await }
    };
    let r = post("pause").await;
    assert_eq!((r.status, r.json["state"].as_str()), (200, Some("paused")));
    assert_eq!(post("pause").await.status, 409);
    assert_eq!(post("resume").await.json["state"], "running");
    assert_eq!(post("sideways").await.status, 400);
    let r = post("promote").await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["state"], "completed");
    for id in NODES {
        api.wait_applied(id, v, WAIT).await;
    }
    assert_eq!(post("abort").await.status, 409);

    // Abort: every node back to the version before, committed again.
    next["backends"][0]["servers"][0]["weight"] = json!(20);
    let w = api.put_config(&next).await;
    api.wait_applied("node-a", w, WAIT).await;
    let r = api
        .request("POST", &format!("/api/v1/rollouts/{w}/abort"), None, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["state"], "aborted");
    assert!(r.json["reason"].as_str().unwrap().starts_with("aborted by"));
    let back = r.json["rollback_version"].as_u64().unwrap();
    for id in NODES {
        api.wait_applied(id, back, WAIT).await;
    }
    assert_eq!(
        api.get("/api/v1/config").await.json["backends"][0]["servers"][0]["weight"],
        10
    );
    // Without a policy, versions go to every node at once again.
    assert_eq!(
        api.request("DELETE", "/api/v1/rollout-policy", None, None)
            .await
            .json["revision"],
        2
    );
    let revisions = api.get("/api/v1/rollout-policy/revisions").await.json;
    assert_eq!(revisions.as_array().unwrap().len(), 2);
    next["backends"][0]["servers"][0]["weight"] = json!(30);
    let x = api.put_config(&next).await;
    for id in NODES {
        api.wait_applied(id, x, WAIT).await;
    }
    assert_eq!(api.get(&format!("/api/v1/rollouts/{x}")).await.status, 404);
}
