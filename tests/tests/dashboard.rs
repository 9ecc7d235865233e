//! The dashboard in a real browser: headless Chromium loads it from the control plane,
//! takes the admin token from its link, and renders the fleet, every server's live state
//! as the node sees it, and the configuration history.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use sluice_tests::harness::{eventually, fixture, ws_connect, ws_roundtrip};

const WAIT: Duration = Duration::from_secs(10);

/// The browser: `$SLUICE_CHROMIUM`, else Debian's `chromium` (`apt-get install chromium`;
/// `scripts/test.sh` installs it when missing).
fn chromium() -> String {
    std::env::var("SLUICE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Loads `url` in headless Chromium, lets its scripts run, and returns the DOM.
fn rendered_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=8000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {} ({e}); install it with `apt-get install chromium`",
                chromium()
            )
        });
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_dashboard_shows_fleet_servers_and_history_in_a_browser() {
    let f = fixture(&["ws-01"], |bind, addr| {
        json!({
            "frontends": [{ "name": "web", "binds": [{ "address": bind.to_string() }], "default_backend": "ws" }],
            "backends": [{
                "name": "ws",
                "health_check": { "type": "websocket", "uri": "/health" },
                "servers": [
                    { "name": "ws-01", "address": addr("ws-01"), "check": { "inter": "200ms" } },
                    { "name": "ws-02", "address": addr("ws-02"), "state": "drain" }
                ]
            }]
        })
    })
    .await;
    let mut ws = ws_connect(f.bind, "/chat").await;
    assert_eq!(ws_roundtrip(&mut ws, "whoami").await, "ws-01");
    let api = f.cp.api();
    eventually(
        WAIT,
        "the control plane to see ws-01 up with one tunnel",
        || async {
            let b = api.get("/api/v1/backends/ws").await.json;
            let n = b["live"][0]["nodes"].as_array()?.first()?.clone();
            (n["health"] == "up" && n["current_tunnels"] == 1).then_some(())
        },
    )
    .await;
    let version = api.get("/api/v1/config").await.etag.unwrap();

    let url = format!("{}/#token={}", f.cp.api, f.cp.admin_token);
    let dom = tokio::task::spawn_blocking(move || rendered_dom(&url))
        .await
        .unwrap();

    // The token from the link was accepted: the fleet is shown, not the login hint.
    assert!(!dom.contains("admin token was refused"), "{dom}");
    assert!(dom.contains("<td>node-a</td>"), "no node row: {dom}");
    assert!(dom.contains(r#"<td class="ok">online</td>"#), "{dom}");
    assert!(
        dom.contains(&format!("configuration v{}", version.trim_matches('"'))),
        "{dom}"
    );
    // Servers: ws-01 up with its tunnel on node-a; ws-02 draining, unchecked.
    assert!(
        dom.contains(r#"<td>ws</td><td>ws-01</td>"#)
            && dom.contains(r#"<td class="ok">up</td><td>1</td><td>1</td>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<td>ws-02</td>"#) && dom.contains(r#"<td class="lag">drain</td>"#),
        "{dom}"
    );
    // History: the change that set this up.
    assert!(dom.contains("PUT /api/v1/config"), "{dom}");
}
