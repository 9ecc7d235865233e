//! A reader of the control plane's live feed (`GET /api/v1/live`, server-sent events).

use std::time::Duration;

use serde_json::Value;

/// Reads `/api/v1/live` at `api_base` until `want` returns a value for a message (its
/// `event:` kind and JSON data), within `timeout`.
pub async fn live_until<T>(
    api_base: &str,
    token: &str,
    timeout: Duration,
    mut want: impl FnMut(&str, &Value) -> Option<T>,
) -> T {
    let mut resp = reqwest::Client::new()
        .get(format!("{api_base}/api/v1/live"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut buffer = String::new();
    tokio::time::timeout(timeout, async {
        loop {
            let chunk = resp.chunk().await.unwrap().expect("the feed stays open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let kind = block
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .unwrap_or("message")
                    .to_string();
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                if let Some(found) = want(&kind, &value) {
                    return found;
                }
            }
        }
    })
    .await
    .expect("the awaited live message in time")
}
