//! The write path against a real (temporary) SQLite store: versions, If-Match, nothing
//! stored on error, certificates and documents through the same path, publication.

use super::*;
use crate::config::{Backend, Certificate, Frontend};

async fn service() -> (ConfigService, Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("t.db").to_str().unwrap())
        .await
        .unwrap();
    let service = ConfigService::start(store.clone(), 1000).await.unwrap();
    (service, store, dir)
}

fn backend(name: &str) -> Backend {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "servers": [{ "name": "s1", "address": "127.0.0.1:9001" }]
    }))
    .unwrap()
}

fn frontend(name: &str, tls: Option<&str>) -> Frontend {
    let bind = match tls {
        Some(cert) => {
            serde_json::json!({ "address": "127.0.0.1:8443", "tls": { "certificates": [cert] } })
        }
        None => serde_json::json!({ "address": "127.0.0.1:8443" }),
    };
    serde_json::from_value(serde_json::json!({
        "name": name,
        "binds": [bind],
        "default_backend": "app"
    }))
    .unwrap()
}

fn certificate(name: &str) -> Certificate {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    Certificate {
        name: name.into(),
        cert_pem: c.cert.pem(),
        key_pem: c.key_pair.serialize_pem(),
        created_unix_ms: 1,
    }
}

#[tokio::test]
async fn a_change_is_versioned_stored_and_published() {
    let (service, store, _dir) = service().await;
    let mut updates = service.subscribe();
    assert_eq!(
        service.current().snapshot.version,
        1,
        "a fresh store starts at version 1"
    );
    let applied = service
        .apply(None, "create backend app", "test", |c| {
            c.document.backends.push(backend("app"));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((applied.version, applied.changed), (2, true));
    assert_eq!(applied.summary, "create backend app: +backend app");
    assert!(updates.has_changed().unwrap());
    let published = updates.borrow_and_update().clone();
    assert_eq!(published.snapshot.version, 2);
    assert_eq!(published.snapshot.backends[0].name, "app");
    let (version, stored) = store.load().await.unwrap();
    assert_eq!(version, 2);
    assert_eq!(stored.document.backends, vec![backend("app")]);

    // The same change again: no new version, nothing published.
    let again = service
        .apply(Some(2), "create backend app", "test", |c| {
            c.document.backends = vec![backend("app")];
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((again.version, again.changed), (2, false));
    assert!(!updates.has_changed().unwrap());
    assert_eq!(store.list_snapshots(None, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_stale_or_invalid_change_stores_nothing() {
    let (service, store, _dir) = service().await;
    let stale = service
        .apply(Some(7), "x", "test", |c| {
            c.document.backends.push(backend("app"));
            Ok(())
        })
        .await;
    assert!(matches!(
        stale,
        Err(ChangeError::Precondition { current: 1 })
    ));
    let invalid = service
        .apply(None, "x", "test", |c| {
            c.document.frontends.push(frontend("web", None));
            Ok(())
        })
        .await;
    match invalid {
        Err(ChangeError::Invalid(Invalid(errors))) => {
            assert_eq!(errors[0].field, "frontends[0].default_backend");
        }
        other => panic!("expected an invalid document, got {other:?}"),
    }
    let refused = service
        .apply(None, "x", "test", |_| {
            Err(ChangeError::NotFound("no such thing".into()))
        })
        .await;
    assert!(matches!(refused, Err(ChangeError::NotFound(_))));
    assert_eq!(store.load().await.unwrap().0, 1);
    assert_eq!(service.current().snapshot.version, 1);
}

#[tokio::test]
async fn certificates_and_documents_share_the_write_path() {
    let (service, store, _dir) = service().await;
    // A bind naming a certificate that is not there is refused on the bind's field.
    let missing = service
        .apply(None, "x", "test", |c| {
            c.document.backends.push(backend("app"));
            c.document.frontends.push(frontend("web", Some("site")));
            Ok(())
        })
        .await;
    match missing {
        Err(ChangeError::Invalid(Invalid(errors))) => {
            assert_eq!(errors[0].field, "frontends[0].binds[0].tls.certificates[0]");
        }
        other => panic!("expected a missing certificate, got {other:?}"),
    }
    // Certificates first, then the document: two versions; only the used one ships.
    let v = service
        .apply(None, "create certificates", "test", |c| {
            c.certificates.push(certificate("unused"));
            c.certificates.push(certificate("site"));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((v.version, v.summary.as_str()), (2, "create certificates"));
    let v = service
        .apply(Some(2), "x", "test", |c| {
            c.document.backends.push(backend("app"));
            c.document.frontends.push(frontend("web", Some("site")));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(v.version, 3);
    let shipped = service.current();
    let names: Vec<_> = shipped
        .snapshot
        .certificates
        .iter()
        .map(|c| &c.name)
        .collect();
    assert_eq!(names, ["site"]);
    let (_, stored) = store.load().await.unwrap();
    let names: Vec<_> = stored.certificates.iter().map(|c| &c.name).collect();
    assert_eq!(names, ["site", "unused"], "stored sorted by name");

    // A server state is a versioned change like any other.
    let v = service
        .apply(None, "set server app/s1 state drain", "test", |c| {
            c.document.backends[0].servers[0].state = Some("drain".into());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(v.version, 4);
    assert_eq!(
        service.current().snapshot.backends[0].servers[0].state(),
        pb::ServerState::Drain
    );
}

#[tokio::test]
async fn each_version_is_encoded_once_as_the_message_nodes_receive() {
    let (service, _store, _dir) = service().await;
    service
        .apply(None, "create backend app", "test", |c| {
            c.document.backends.push(backend("app"));
            Ok(())
        })
        .await
        .unwrap();
    let published = service.current();
    let decoded = pb::ControlMessage::decode(published.message.clone()).unwrap();
    assert_eq!(
        decoded.msg,
        Some(pb::control_message::Msg::Snapshot(
            published.snapshot.clone()
        ))
    );
    // Every subscriber shares the same bytes.
    let a = service.subscribe().borrow().message.clone();
    let b = service.subscribe().borrow().message.clone();
    assert_eq!(a.as_ptr(), b.as_ptr());
}

#[tokio::test]
async fn a_configuration_over_the_size_limit_is_refused_on_write() {
    let (service, store, _dir) = service().await;
    let huge = "x".repeat(sluice_proto::MAX_CONFIG_BYTES);
    let refused = service
        .apply(None, "x", "test", |c| {
            c.document.backends.push(backend("app"));
            let mut f = frontend("web", None);
            f.http_request = vec![serde_json::from_value(
                serde_json::json!({ "action": "return", "body": huge }),
            )
            .unwrap()];
            c.document.frontends.push(f);
            Ok(())
        })
        .await;
    match refused {
        Err(ChangeError::Invalid(Invalid(errors))) => {
            assert_eq!(errors[0].field, "(document)");
            assert!(errors[0].message.contains("at most"), "{errors:?}");
        }
        other => panic!("expected a size error, got {other:?}"),
    }
    assert_eq!(store.load().await.unwrap().0, 1, "nothing stored");
}
