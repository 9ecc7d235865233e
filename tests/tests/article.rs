//! The article's complete configuration through a real node, twice: as the hand-written
//! document (`docs/examples/article.json`) and as `sluice-cp`'s import of the article's
//! haproxy.cfg (`docs/examples/article.haproxy.cfg`, through
//! `POST /api/v1/config/import`). The same cases run on both: the redirect to HTTPS,
//! the headers the article sets, routing WebSockets by path, cookie stickiness, the
//! WebSocket handshake health check, and the per-source upgrade rate limit.
//!
//! Only what must differ on a test machine is changed, the same way on both documents:
//! the bind addresses, the certificate's name, the servers' addresses (this test's
//! backends) and the check interval (200 ms, so that `fall` failures take a second).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sluice_tests::harness::{any_port, eventually, Fixture};
use sluice_tests::{raw, tls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const WAIT: Duration = Duration::from_secs(20);
const SERVERS: [&str; 10] = [
    "chat-01",
    "chat-02",
    "notify-01",
    "notify-02",
    "ws-01",
    "ws-02",
    "ws-03",
    "app-01",
    "app-02",
    "app-03",
];
const HAND_WRITTEN: &str = include_str!("../../docs/examples/article.json");
const HAPROXY_CFG: &str = include_str!("../../docs/examples/article.haproxy.cfg");

/// `doc` made to run here: binds on loopback, certificate `site`, servers at `addr`,
/// checks every 200 ms.
fn for_this_machine(
    mut doc: Value,
    (tls_bind, plain_bind): (SocketAddr, SocketAddr),
    addr: &dyn Fn(&str) -> String,
) -> Value {
    let binds = &mut doc["frontends"][0]["binds"];
    binds[0]["address"] = json!(tls_bind.to_string());
    binds[0]["tls"]["certificates"] = json!(["site"]);
    binds[1]["address"] = json!(plain_bind.to_string());
    for backend in doc["backends"].as_array_mut().unwrap() {
        for server in backend["servers"].as_array_mut().unwrap() {
            let name = server["name"].as_str().unwrap().to_string();
            server["address"] = json!(addr(&name));
            server["check"]["inter"] = json!("200ms");
        }
    }
    doc
}

/// What one request over TLS got: status, headers (lower-case names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn exchange<S: AsyncReadExt + AsyncWriteExt + Unpin>(s: S, request: &str) -> Answer {
    let text = raw::exchange(s, request).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// An upgrade over TLS to `path` (with `cookie`): the server that answered `whoami` and
/// the cookie set, or the status of a refusal.
async fn upgrade(
    bind: SocketAddr,
    cert: &rcgen::CertifiedKey,
    path: &str,
    cookie: Option<&str>,
) -> Result<(String, Option<String>), u16> {
    let stream = tls::connect(bind, "chat.example", cert, &["http/1.1"]).await;
    let mut request = format!("wss://chat.example{path}")
        .into_client_request()
        .unwrap();
    if let Some(c) = cookie {
        request.headers_mut().insert("cookie", c.parse().unwrap());
    }
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((mut ws, response)) => {
            let set = response
                .headers()
                .get("set-cookie")
                .map(|v| v.to_str().unwrap().to_string());
            ws.send(Message::Text("whoami".into())).await.unwrap();
            let name = match ws.next().await {
                Some(Ok(Message::Text(t))) => t.to_string(),
                other => panic!("no answer to whoami on {path}: {other:?}"),
            };
            let _ = ws.close(None).await;
            Ok((name, set))
        }
        Err(tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("upgrade to {path}: {e}"),
    }
}

async fn health(f: &Fixture, backend: &str, server: &str) -> Option<String> {
    let r = f.cp.api().get(&format!("/api/v1/backends/{backend}")).await;
    let live = r.json["live"]
        .as_array()?
        .iter()
        .find(|s| s["server"] == server)?["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"] == "node-a")?
        .clone();
    live["health"].as_str().map(str::to_string)
}

/// Runs every case on `doc` through a fresh control plane and node.
async fn the_article_holds(doc: Value) {
    let f = Fixture::start(&SERVERS).await;
    let api = f.cp.api();
    let cert = tls::self_signed();
    let upload = json!({ "name": "site", "cert_pem": cert.cert.pem(), "key_pem": cert.key_pair.serialize_pem() });
    let r = api
        .request("POST", "/api/v1/certificates", Some(&upload), None)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let (tls_conf, plain_conf) = (any_port("127.0.0.2"), any_port("127.0.0.1"));
    let doc = for_this_machine(doc, (tls_conf, plain_conf), &|n| f.addr(n));
    f.apply(&doc).await;
    let (tls_bind, plain_bind) = (f.bound(tls_conf).await, f.bound(plain_conf).await);
    for (backend, server) in [
        ("ws_chat_backends", "chat-01"),
        ("ws_chat_backends", "chat-02"),
    ] {
        eventually(WAIT, &format!("{server} checked up"), || async {
            (health(&f, backend, server).await? == "up").then_some(())
        })
        .await;
    }

    // Plain HTTP is redirected to HTTPS.
    let plain = TcpStream::connect(plain_bind).await.unwrap();
    let a = exchange(
        plain,
        "GET /page HTTP/1.1\r\nHost: chat.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 301);
    assert_eq!(a.header("location"), Some("https://chat.example/page"));

    // HTTPS: the web servers answer, with HSTS; they see X-Forwarded-Proto and the
    // client's own address, not the X-Forwarded-For it sent.
    let s = tls::connect(tls_bind, "chat.example", &cert, &["http/1.1"]).await;
    let a = exchange(
        s,
        "GET /page HTTP/1.1\r\nHost: chat.example\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.header("strict-transport-security")
            .is_some_and(|v| v.starts_with("max-age=63072000")),
        "{:?}",
        a.headers
    );
    let seen: Value = serde_json::from_str(&a.body).unwrap();
    assert!(
        seen["server"].as_str().unwrap().starts_with("app-"),
        "{seen}"
    );
    let sent = seen["headers"].to_string().to_ascii_lowercase();
    assert!(sent.contains(r#""x-forwarded-proto","https""#), "{sent}");
    assert!(sent.contains(r#""x-forwarded-for","127.0.0.1""#), "{sent}");
    assert!(!sent.contains("6.6.6.6"), "{sent}");

    // WebSockets go by path: chat, notifications, the rest.
    for (path, pool) in [
        ("/ws/chat/room", "chat-"),
        ("/ws/notifications", "notify-"),
        ("/ws/feed", "ws-"),
    ] {
        let (server, _) = upgrade(tls_bind, &cert, path, None).await.unwrap();
        assert!(server.starts_with(pool), "{path} went to {server}");
    }

    // Stickiness: the chat pool sets WSCHAT; a client presenting it comes back.
    let (first, set) = upgrade(tls_bind, &cert, "/ws/chat", None).await.unwrap();
    let set = set.expect("a WSCHAT cookie");
    assert!(set.starts_with("WSCHAT=chat0"), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    for _ in 0..3 {
        let (again, _) = upgrade(tls_bind, &cert, "/ws/chat", Some(&cookie))
            .await
            .unwrap();
        assert_eq!(again, first, "sticky to {first} with {cookie}");
    }

    // The WebSocket handshake check: chat-02 stops upgrading, the check (expecting 101)
    // marks it down, and chat goes to chat-01 — even with chat-02's cookie.
    f.backend("chat-02")
        .shared
        .refuse_upgrades
        .store(true, Ordering::SeqCst);
    eventually(WAIT, "chat-02 checked down", || async {
        (health(&f, "ws_chat_backends", "chat-02").await? == "down").then_some(())
    })
    .await;
    for cookie in [None, Some("WSCHAT=chat02")] {
        let (server, _) = upgrade(tls_bind, &cert, "/ws/chat", cookie).await.unwrap();
        assert_eq!(server, "chat-01", "with cookie {cookie:?}");
    }

    // More than 30 upgrades from one source in 10 s are refused with 429; plain
    // requests from it are not limited.
    let mut limited = None;
    for i in 0..45 {
        if let Err(status) = upgrade(tls_bind, &cert, "/ws/feed", None).await {
            limited = Some((i, status));
            break;
        }
    }
    let (at, status) = limited.expect("an upgrade refused within 45");
    assert_eq!(status, 429);
    assert!(at >= 10, "refused after only {at} more upgrades");
    let s = tls::connect(tls_bind, "chat.example", &cert, &["http/1.1"]).await;
    let a = exchange(
        s,
        "GET / HTTP/1.1\r\nHost: chat.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn the_hand_written_article_document_holds() {
    the_article_holds(serde_json::from_str(HAND_WRITTEN).unwrap()).await;
}

#[tokio::test]
async fn the_imported_article_haproxy_cfg_holds_the_same() {
    // Imported through the API, as an operator would; nothing is stored by the import.
    let f = Fixture::start(&[]).await;
    let api = f.cp.api();
    let before = api.version().await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/config/import", f.cp.api))
        .bearer_auth(&f.cp.admin_token)
        .header("content-type", "text/plain")
        .body(HAPROXY_CFG)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let imported: Value = r.json().await.unwrap();
    assert_eq!(api.version().await, before, "the import stored nothing");
    // What did not map is reported by line; none of it is in the frontend or backends.
    let first_proxy = HAPROXY_CFG
        .lines()
        .position(|l| l.starts_with("frontend"))
        .unwrap() as u64
        + 1;
    for note in imported["report"].as_array().unwrap() {
        let line = note["line"].as_u64().unwrap();
        assert!(
            line < first_proxy || note["kind"] == "action",
            "an unmapped directive in a proxy: {note}"
        );
    }
    drop(f);
    the_article_holds(imported["document"].clone()).await;
}
