//! TLS termination as the article configures it: certificates uploaded through the REST
//! API (the key never comes back), an HTTPS bind beside a plain one, `ssl_fc` driving the
//! redirect and X-Forwarded-Proto, HSTS, WebSockets over TLS (wss), and a certificate
//! rotation that new connections see while open tunnels carry on.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sluice_tests::harness::{any_port, eventually, fixture, Fixture};
use sluice_tests::raw::exchange;
use sluice_tests::tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// The article's TLS settings for its HTTPS bind, from the example document.
fn article_tls() -> Value {
    let doc: Value =
        serde_json::from_str(include_str!("../../docs/examples/article.json")).unwrap();
    doc["frontends"][0]["binds"][0]["tls"].clone()
}

async fn put_and_wait(f: &Fixture, doc: &Value) {
    let api = f.cp.api();
    let v = api.put_config(doc).await;
    api.wait_applied("node-a", v, WAIT).await;
}

#[tokio::test]
async fn https_and_wss_with_certificates_from_the_api() {
    let f = fixture(&["app-01", "ws-01"], |bind, addr| {
        json!({
            "frontends": [{ "name": "fe", "binds": [{ "address": bind.to_string() }], "default_backend": "app" }],
            "backends": [{ "name": "app", "servers": [{ "name": "a1", "address": addr("app-01") }] }]
        })
    })
    .await;
    let api = f.cp.api();
    let cert = tls::self_signed();
    let other = tls::self_signed();

    // Uploads are checked; the key never comes back.
    let upload = |method: &'static str, path: &'static str, cert_pem: String, key_pem: String| {
        let api = api.clone();
        async move {
            let body = json!({ "name": "site", "cert_pem": cert_pem, "key_pem": key_pem });
            api.request(method, path, Some(&body), None).await
        }
    };
    let r = upload(
        "POST",
        "/api/v1/certificates",
        cert.cert.pem(),
        other.key_pair.serialize_pem(),
    )
    .await;
    assert_eq!(r.status, 422, "{:?}", r.json);
    assert!(r.json.to_string().contains("key_pem"), "{:?}", r.json);
    let r = upload(
        "POST",
        "/api/v1/certificates",
        "not a pem".into(),
        cert.key_pair.serialize_pem(),
    )
    .await;
    assert_eq!(r.status, 422, "{:?}", r.json);
    assert!(r.json.to_string().contains("cert_pem"), "{:?}", r.json);
    let r = upload(
        "POST",
        "/api/v1/certificates",
        cert.cert.pem(),
        cert.key_pair.serialize_pem(),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json);
    let listed = api.get("/api/v1/certificates").await;
    assert_eq!(listed.json[0]["name"], "site");
    assert!(!listed.json.to_string().contains("PRIVATE KEY"));
    assert!(!api
        .get("/api/v1/certificates/site")
        .await
        .json
        .to_string()
        .contains("PRIVATE KEY"));

    // The article's frontend: HTTPS and plain binds, ssl_fc rules, HSTS.
    let tls_configured = any_port("127.0.0.2");
    // The article's settings (h2 + http/1.1 ALPN, TLS 1.2 minimum, its cipher list, no
    // tickets), with this test's certificate.
    let mut tls_settings = article_tls();
    tls_settings["certificates"] = json!(["site"]);
    let addr_of = |n: &str| f.backend(n).addr.to_string();
    let doc = json!({
        "frontends": [{
            "name": "fe",
            "binds": [
                { "address": tls_configured.to_string(), "tls": tls_settings },
                { "address": any_port("127.0.0.1").to_string() }
            ],
            "acls": [{ "name": "is_websocket", "expr": "hdr(Upgrade) -i websocket" }],
            "http_request": [
                { "action": "redirect", "scheme": "https", "code": 301, "unless": "{ ssl_fc }" },
                { "action": "set-header", "name": "X-Forwarded-Proto", "value": "https", "if": "{ ssl_fc }" },
                { "action": "set-header", "name": "X-Alpn", "value": "h1", "if": "{ ssl_fc_alpn http/1.1 }" }
            ],
            "http_response": [
                { "action": "set-header", "name": "Strict-Transport-Security", "value": "max-age=63072000; includeSubDomains; preload" }
            ],
            "use_backend": [{ "backend": "ws", "if": "is_websocket" }],
            "default_backend": "app"
        }],
        "backends": [
            { "name": "app", "servers": [{ "name": "a1", "address": addr_of("app-01") }] },
            { "name": "ws", "servers": [{ "name": "w1", "address": addr_of("ws-01") }] }
        ]
    });
    put_and_wait(&f, &doc).await;
    let tls_bind = f.bound(tls_configured).await;

    // HTTPS over HTTP/2: the article's `alpn h2,http/1.1` gives a client offering both
    // h2; the same rules apply (forwarded as https, HSTS on the response).
    let tls = tls::connect(tls_bind, "chat.example", &cert, &["h2", "http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h2 = sluice_tests::h2client::H2::over(tls, "chat.example").await;
    let resp = h2.get("/over-h2", &[]).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.headers["strict-transport-security"]
        .to_str()
        .unwrap()
        .starts_with("max-age=63072000"));
    let seen = f.backend("app-01").requests().pop().unwrap();
    assert_eq!(seen.uri, "/over-h2");
    assert_eq!(seen.header_values("x-forwarded-proto"), ["https"]);
    assert!(seen.header_values("x-alpn").is_empty(), "ssl_fc_alpn is h2");
    // A WebSocket over that TLS connection's HTTP/2 (RFC 8441), routed by the ACL.
    let (mut ws, _) = h2.websocket("/ws", &[]).await.expect("a WebSocket stream");
    let who = sluice_tests::h2client::h2_ws_roundtrip(&mut ws, Message::text("whoami")).await;
    assert_eq!(who, Message::text("ws-01"));

    // HTTPS over HTTP/1.1: a client offering only http/1.1, or nothing, gets http/1.1.
    let none = tls::connect(tls_bind, "chat.example", &cert, &[]).await;
    assert_eq!(none.get_ref().1.alpn_protocol(), None);
    drop(none);
    let tls = tls::connect(tls_bind, "chat.example", &cert, &["http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let resp = exchange(
        tls,
        "GET /hello HTTP/1.1\r\nHost: chat.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=63072000"),
        "{resp}"
    );
    let seen = f.backend("app-01").requests().pop().unwrap();
    assert_eq!(seen.header_values("x-forwarded-proto"), ["https"]);
    assert_eq!(seen.header_values("x-alpn"), ["h1"], "ssl_fc_alpn http/1.1");

    // Plain HTTP is redirected to HTTPS.
    let plain = TcpStream::connect(f.bind).await.unwrap();
    let resp = exchange(
        plain,
        "GET /hello?x=1 HTTP/1.1\r\nHost: chat.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 301"), "{resp}");
    assert!(
        resp.contains("location: https://chat.example/hello?x=1"),
        "{resp}"
    );

    // wss: a WebSocket over the TLS bind, large frames included.
    let tls = tls::connect(tls_bind, "chat.example", &cert, &["http/1.1"]).await;
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://chat.example/ws", tls)
        .await
        .expect("a WebSocket upgrade over TLS");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("whoami")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ws-01"));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));

    // A certificate in use cannot be deleted.
    let r = api
        .request("DELETE", "/api/v1/certificates/site", None, None)
        .await;
    assert_eq!(r.status, 422, "{:?}", r.json);
    assert!(
        r.json
            .to_string()
            .contains("frontends[0].binds[0].tls.certificates[0]"),
        "{:?}",
        r.json
    );

    // Rotation: new connections get the new certificate; the open tunnel carries on.
    let renewed = tls::self_signed();
    let r = upload(
        "PUT",
        "/api/v1/certificates/site",
        renewed.cert.pem(),
        renewed.key_pair.serialize_pem(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["changed"], true);
    api.wait_applied("node-a", r.json["version"].as_u64().unwrap(), WAIT)
        .await;
    let tls = tls::connect(tls_bind, "chat.example", &renewed, &["http/1.1"]).await;
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(served.as_ref(), renewed.cert.der().as_ref());
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );

    // Something that is not TLS on the TLS port is counted and dropped.
    let mut junk = TcpStream::connect(tls_bind).await.unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(WAIT, junk.read_to_end(&mut sink)).await;
    let metrics_url = format!("{}/metrics", f.dp.admin);
    eventually(WAIT, "the failed handshake in /metrics", || async {
        let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
        text.contains("sluice_frontend_tls_handshake_failures_total{frontend=\"fe\"} 1")
            .then_some(())
    })
    .await;
}
