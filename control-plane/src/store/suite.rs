//! The store's behaviour, run on every database [`super::testdb`] provides (SQLite
//! always, PostgreSQL when the test command started one): events, traffic history,
//! node records, rollout policies and records, bootstrap tokens and node credentials,
//! history retention, the conditional commit, consistent reads.

use super::testdb;
use super::*;

async fn each(check: impl AsyncFn(Store, &'static str)) {
    for db in testdb::each().await {
        let store = Store::open(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", db.name));
        // Opening an existing database again applies no migration twice.
        let again = Store::open(&db.url).await.unwrap();
        drop(again);
        check(store, db.name).await;
    }
}

#[tokio::test]
async fn events_append_list_by_filter_and_prune() {
    each(async |store, db| {
        for (i, kind) in ["node_connected", "version_acked", "node_connected"]
            .iter()
            .enumerate()
        {
            let mut e = Event {
                kind: kind.to_string(),
                detail: format!("e{i}"),
                ..Event::default()
            };
            e.unix_ms = 1000 + i as i64;
            e.node = Some(format!("n{}", i % 2));
            e.version = Some(i as u64);
            store.record_event(&e).await.unwrap();
        }
        let all = store
            .list_events(&EventFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 3, "{db}");
        assert!(all[0].id > all[1].id, "{db}: newest first");
        let by_kind = store
            .list_events(&EventFilter {
                kind: Some("node_connected".into()),
                node: Some("n0".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(by_kind.len(), 2, "{db}");
        assert_eq!(store.prune_events(1002).await.unwrap(), 2, "{db}");
    })
    .await;
}

#[tokio::test]
async fn series_points_are_replaced_read_and_pruned() {
    each(async |store, db| {
        let rows = vec![
            ("fleet".to_string(), 10_000, vec![1, 2]),
            ("node:a".to_string(), 10_000, vec![3]),
        ];
        store.write_series(0, "cp", &rows).await.unwrap();
        store
            .write_series(0, "cp", &[("fleet".to_string(), 10_000, vec![9])])
            .await
            .unwrap();
        let fleet = store
            .read_series(0, (Some("fleet"), None), 0, 20_000)
            .await
            .unwrap();
        assert_eq!(fleet.len(), 1, "{db}");
        assert_eq!(fleet[0].vals, vec![9], "{db}: written again replaces");
        assert_eq!(
            store
                .read_series(0, (None, None), 0, 20_000)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            store.last_series_time(0, "cp").await.unwrap(),
            Some(10_000),
            "{db}"
        );
        assert_eq!(
            store.prune_series(0, 0, 20_000).await.unwrap(),
            1,
            "{db}: node rows go first"
        );
        assert!(store.database_bytes().await.unwrap() > 0, "{db}");
    })
    .await;
}

#[tokio::test]
async fn nodes_are_recorded_with_their_replies() {
    each(async |store, db| {
        let hello = NodeHello {
            node_id: "n1",
            labels_json: "{\"zone\":\"a\"}",
            software_version: "0.1.0",
            applied_version: 0,
            replica: "cp-a",
        };
        store.upsert_node(&hello, 100).await.unwrap();
        store
            .record_node_reply("n1", 3, NodeReply::Ack { digest_hex: "ab" }, 200)
            .await
            .unwrap();
        store
            .record_node_reply("n1", 4, NodeReply::Nack { reason: "bind" }, 300)
            .await
            .unwrap();
        let n = store.list_nodes().await.unwrap().pop().unwrap();
        assert_eq!(
            (n.applied_version, n.applied_digest.as_str()),
            (3, "ab"),
            "{db}"
        );
        assert_eq!(n.last_nack_version, Some(4), "{db}");
        assert_eq!((n.first_seen_ms, n.replica.as_str()), (100, "cp-a"), "{db}");
        store
            .heartbeat_nodes(
                &[super::NodeBeat {
                    node_id: "n1".into(),
                    last_seen_ms: 400,
                    ..Default::default()
                }],
                "cp-b",
            )
            .await
            .unwrap();
        store.touch_node("n1", 500, "cp-a").await.unwrap();
        let n = store.list_nodes().await.unwrap().pop().unwrap();
        assert_eq!(
            (n.last_seen_ms, n.replica.as_str()),
            (500, "cp-b"),
            "{db}: moved on"
        );
        store.touch_node("n1", 600, "cp-b").await.unwrap();
        assert_eq!(
            store.list_nodes().await.unwrap()[0].replica,
            "",
            "{db}: gone"
        );
    })
    .await;
}

#[tokio::test]
async fn history_bodies_are_dropped_past_retention() {
    each(async |store, db| {
        let (mut v, config) = store.load().await.unwrap();
        for _ in 0..3 {
            let info = CommitInfo {
                summary: "s",
                digest: "d",
                actor: "t",
                created_unix_ms: 1,
            };
            v = store
                .commit(v, &config, false, &info, b"snap")
                .await
                .unwrap();
        }
        assert_eq!(store.prune_history(1).await.unwrap(), 2, "{db}");
        let old = store.get_snapshot(1).await.unwrap();
        assert_eq!(old.snapshot.as_deref(), Some(&b""[..]), "{db}");
        assert_eq!(
            store.get_snapshot(3).await.unwrap().snapshot.as_deref(),
            Some(&b"snap"[..])
        );
        assert_eq!(
            store.snapshot_digest(3).await.unwrap().as_deref(),
            Some("d"),
            "{db}"
        );
    })
    .await;
}

#[tokio::test]
async fn rollout_policies_are_revisions_and_rollouts_records() {
    each(async |store, db| {
        assert!(store.rollout_policy().await.unwrap().is_none(), "{db}");
        assert_eq!(
            store
                .put_rollout_policy(Some(0), Some("{}"), "a", 1)
                .await
                .unwrap(),
            1
        );
        assert!(matches!(
            store.put_rollout_policy(Some(0), None, "b", 2).await,
            Err(StoreError::Conflict { current: 1 })
        ));
        assert_eq!(
            store.put_rollout_policy(None, None, "b", 2).await.unwrap(),
            2
        );
        let now = store.rollout_policy().await.unwrap().unwrap();
        assert_eq!((now.revision, now.body), (2, None), "{db}");
        assert_eq!(store.rollout_policy_revisions(10).await.unwrap().len(), 2);
        store
            .save_rollout(5, "running", "{\"v\":5}", 1)
            .await
            .unwrap();
        store
            .save_rollout(6, "completed", "{\"v\":6}", 1)
            .await
            .unwrap();
        assert_eq!(
            store.unfinished_rollout().await.unwrap().as_deref(),
            Some("{\"v\":5}")
        );
        store
            .save_rollout(5, "superseded", "{\"v\":5,\"x\":1}", 2)
            .await
            .unwrap();
        assert!(store.unfinished_rollout().await.unwrap().is_none(), "{db}");
        assert_eq!(store.rollouts(10).await.unwrap().len(), 2);
        assert_eq!(
            store.rollout(5).await.unwrap().as_deref(),
            Some("{\"v\":5,\"x\":1}")
        );
    })
    .await;
}

#[tokio::test]
async fn bootstrap_tokens_are_spent_once_and_revoked_nodes_stay_out() {
    each(async |store, db| {
        let row = BootstrapRow {
            id: "bt-1".into(),
            description: "rack".into(),
            created_unix_ms: 0,
            expires_unix_ms: Some(1000),
            uses_left: Some(1),
            used: 0,
            revoked_unix_ms: None,
            actor: "t".into(),
        };
        store.create_bootstrap_token(&row, "boot").await.unwrap();
        // Expired: refused, and nothing spent.
        assert_eq!(
            store
                .enroll_node("n1", Some("boot"), "c1", 1000)
                .await
                .unwrap(),
            Err(EnrollRefusal::BadToken)
        );
        assert_eq!(
            store
                .enroll_node("n1", Some("boot"), "c1", 10)
                .await
                .unwrap(),
            Ok(()),
            "{db}"
        );
        assert_eq!(
            store
                .enroll_node("n2", Some("boot"), "c2", 10)
                .await
                .unwrap(),
            Err(EnrollRefusal::BadToken),
            "{db}: used up"
        );
        let t = store.bootstrap_token("bt-1").await.unwrap().unwrap();
        assert_eq!((t.uses_left, t.used), (Some(0), 1), "{db}");
        // The fleet token enrolls without a bootstrap row; enrolling again replaces.
        assert_eq!(
            store.enroll_node("n1", None, "c1b", 20).await.unwrap(),
            Ok(())
        );
        assert!(store.credential("c1").await.unwrap().is_none(), "{db}");
        assert_eq!(
            store.credential("c1b").await.unwrap().unwrap().node_id,
            "n1"
        );
        let at = store.revoke_node("n1", 30).await.unwrap();
        assert_eq!(at, 30, "{db}");
        assert!(
            store.credential("c1b").await.unwrap().unwrap().revoked,
            "{db}"
        );
        assert_eq!(
            store.enroll_node("n1", None, "c1c", 40).await.unwrap(),
            Err(EnrollRefusal::Revoked)
        );
        assert_eq!(
            store.node_credentials().await.unwrap()["n1"],
            (true, Some(30)),
            "{db}"
        );
        assert!(store.revoke_bootstrap_token("bt-1", 50).await.unwrap());
        assert!(!store.revoke_bootstrap_token("nope", 50).await.unwrap());
        assert_eq!(
            store.bootstrap_tokens().await.unwrap()[0].revoked_unix_ms,
            Some(50),
            "{db}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_database_never_both_win() {
    for db in testdb::each().await {
        // Two stores on one database: two control-plane replicas.
        let (a, b) = (
            Store::open(&db.url).await.unwrap(),
            Store::open(&db.url).await.unwrap(),
        );
        let config = Configuration::default();
        for round in 0..40u64 {
            let info = |s| CommitInfo {
                summary: s,
                digest: "",
                actor: "t",
                created_unix_ms: 1,
            };
            let (ia, ib) = (info("a"), info("b"));
            let (ra, rb) = tokio::join!(
                a.commit(round, &config, false, &ia, b"a"),
                b.commit(round, &config, false, &ib, b"b"),
            );
            let wins = [ra.is_ok(), rb.is_ok()].iter().filter(|w| **w).count();
            assert_eq!(wins, 1, "{}: round {round}: {ra:?} {rb:?}", db.name);
            for r in [ra, rb] {
                match r {
                    Ok(v) => assert_eq!(v, round + 1),
                    Err(StoreError::Conflict { current }) => assert_eq!(current, round + 1),
                    Err(e) => panic!("{}: {e:?}", db.name),
                }
            }
        }
        let history = a.list_snapshots(None, 100).await.unwrap();
        assert_eq!(history.len(), 40, "{}: one version per round", db.name);
    }
}

fn info(summary: &str, created_unix_ms: i64) -> CommitInfo<'_> {
    CommitInfo {
        summary,
        digest: "",
        actor: "test",
        created_unix_ms,
    }
}

#[tokio::test]
async fn a_sqlite_store_waits_for_locks_and_journals_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("t.db").to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(store.database(), Database::Sqlite);
    for _ in 0..4 {
        // Every connection of the pool, not just the first.
        let mut conn = store.pool.acquire().await.unwrap();
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(busy, 5000);
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
    }
}

#[tokio::test]
async fn commit_is_conditional_on_the_version() {
    for db in testdb::each().await {
        commit_is_conditional_on(&Store::open(&db.url).await.unwrap()).await;
    }
}

async fn commit_is_conditional_on(store: &Store) {
    let (v, config) = store.load().await.unwrap();
    assert_eq!(v, 0);
    assert_eq!(
        store
            .commit(0, &config, false, &info("first", 1), b"x")
            .await
            .unwrap(),
        1
    );
    match store
        .commit(0, &config, false, &info("stale", 2), b"y")
        .await
    {
        Err(StoreError::Conflict { current: 1 }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.list_snapshots(None, 10).await.unwrap().len(), 1);
}

fn named(frontend: &str, backend: &str) -> Configuration {
    let document = serde_json::from_value(serde_json::json!({
        "frontends": [{ "name": frontend, "binds": [{ "address": "127.0.0.1:8080" }],
                        "default_backend": backend }],
        "backends": [{ "name": backend, "servers": [{ "name": "s", "address": "127.0.0.1:9001" }] }]
    }))
    .unwrap();
    Configuration {
        document,
        certificates: Vec::new(),
    }
}

/// A reader racing a writer only ever sees committed versions: the body it gets is
/// the one committed at the version it gets with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_is_one_committed_version() {
    for db in testdb::each().await {
        let store = Store::open(&db.url).await.unwrap();
        every_read_is_one_committed_version_on(store, db.name).await;
    }
}

async fn every_read_is_one_committed_version_on(store: Store, db: &str) {
    // Odd versions hold `a`, even ones `b`.
    let (a, b) = (named("fe-a", "be-a"), named("fe-b", "be-b"));
    let writer = {
        let (store, a, b) = (store.clone(), a.clone(), b.clone());
        tokio::spawn(async move {
            for v in 0..300u64 {
                let next = if v % 2 == 0 { &a } else { &b };
                store
                    .commit(v, next, false, &info("w", 1), b"x")
                    .await
                    .unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let (version, config) = store.load().await.unwrap();
        let expected = match version {
            0 => Configuration::default(),
            v if v % 2 == 1 => a.clone(),
            _ => b.clone(),
        };
        assert_eq!(config, expected, "{db}: read at version {version}");
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 10, "{db}: only {reads} reads raced the writes");
}
