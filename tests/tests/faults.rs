//! Faults, with the real binaries: the control plane killed (SIGKILL) in a burst of
//! writes, and readers racing writers. Nothing acknowledged is lost, every read is one
//! committed version, and the node serves throughout. (A node restarted while the control
//! plane is down is in `fleet.rs`; a server that goes away mid-tunnel in `websocket.rs`.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::harness::{any_port, eventually, simple_config, ws_whoami, Fixture};

const WAIT: Duration = Duration::from_secs(15);

/// The document of write `i`: the tunnel timeout says which write it was.
fn doc(base: &Value, i: usize) -> Value {
    let mut d = base.clone();
    d["defaults"]["timeouts"]["tunnel"] = json!(format!("{}s", 1000 + i));
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_a_burst_of_writes_loses_no_acknowledged_write() {
    let mut f = Fixture::start(&["echo"]).await;
    let configured = any_port("127.0.0.1");
    let base = simple_config(configured, &[("echo", &[f.backend("echo").addr])], "echo");
    f.apply(&base).await;
    let bind = f.bound(configured).await;

    // A writer PUTs new documents as fast as it is answered, until the first failure.
    let api = f.cp.api();
    let acked: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (api, base, acked, count) = (api.clone(), base.clone(), acked.clone(), count.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let r = api
                    .try_request("PUT", "/api/v1/config", Some(&doc(&base, i)), None)
                    .await;
                // The first write that is not answered 200 (the process is gone) ends it.
                let Some(r) = r.ok().filter(|r| r.status == 200) else {
                    return;
                };
                acked
                    .lock()
                    .unwrap()
                    .push((i, r.json["version"].as_u64().unwrap()));
                count.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    eventually(WAIT, "20 acknowledged writes", || {
        let n = count.load(Ordering::SeqCst);
        async move { (n >= 20).then_some(()) }
    })
    .await;
    f.cp.proc.kill();
    writer.await.unwrap();
    // The node keeps serving with the control plane gone.
    assert_eq!(ws_whoami(bind, "/ws").await, "echo");

    f.cp.restart();
    let api = f.cp.api();
    let acked = acked.lock().unwrap().clone();
    let (_, last_v) = *acked.last().unwrap();
    let current = api.version().await;
    assert!(
        current >= last_v,
        "version {current} after restart, {last_v} acknowledged"
    );
    for (i, v) in &acked {
        let r = api.get(&format!("/api/v1/snapshots/{v}")).await;
        assert_eq!(r.status, 200, "acknowledged version {v} is gone");
        assert_eq!(
            r.json["document"]["defaults"]["timeouts"]["tunnel"],
            format!("{}s", 1000 + i),
            "version {v} holds write {i}"
        );
    }
    // The node converges on the newest version and still serves.
    api.wait_applied("node-a", current, WAIT).await;
    assert_eq!(ws_whoami(bind, "/ws").await, "echo");
    eprintln!(
        "figures: {} writes acknowledged before SIGKILL, 0 lost; version {current} after restart",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_racing_writers_only_see_committed_versions() {
    let f = Fixture::start(&["echo"]).await;
    let configured = any_port("127.0.0.1");
    let base = simple_config(configured, &[("echo", &[f.backend("echo").addr])], "echo");
    // Two documents that differ in their backends: a mix of the two would be visible.
    let mut other = base.clone();
    other["backends"][0]["name"] = json!("echo2");
    other["frontends"][0]["default_backend"] = json!("echo2");
    f.apply(&base).await;
    let api = f.cp.api();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (api, base, other, done) = (api.clone(), base.clone(), other.clone(), done.clone());
        tokio::spawn(async move {
            for i in 0..60 {
                let d = if i % 2 == 0 { &other } else { &base };
                assert!(api.put_config(d).await > 0);
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut reads = 0;
    while !done.load(Ordering::SeqCst) {
        let r = api.get("/api/v1/config").await;
        let version: u64 = r.etag.unwrap().trim_matches('"').parse().unwrap();
        // The body is the document committed at the version its ETag names.
        let committed = api.get(&format!("/api/v1/snapshots/{version}")).await;
        assert_eq!(r.json, committed.json["document"], "version {version}");
        let default = r.json["frontends"][0]["default_backend"].as_str().unwrap();
        assert_eq!(r.json["backends"][0]["name"], default, "a mixed document");
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 5, "only {reads} reads raced the writes");
    eprintln!("figures: {reads} reads raced 60 writes, each one committed version");
}
