//! Active health checks, run by every node on its own.
//!
//! One task per checked server probes it every `inter`: `tcp` (a connect), `http` (a
//! request; healthy when the status is in the expected ranges, 200–399 by default) or
//! `websocket` (a real upgrade with a fresh `Sec-WebSocket-Key`; healthy on a 101 whose
//! `Sec-WebSocket-Accept` is right, after which the check closes cleanly with a close
//! frame). `fall` consecutive failures mark a server down, `rise` consecutive successes
//! bring it back; a server is up until its checks say otherwise. The state lives in the
//! server's counters (outside the plan), so it survives config swaps. Checks are compiled
//! into the plan (`ServerPlan::check`, every default resolved); [`Checks::reconcile`]
//! keeps the tasks of unchanged checks running across swaps.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use crate::config::{CheckKind, CheckPlan, Plan};
use crate::counters::{Health, ServerCounters};

/// The check of one server, as planned: a change restarts it.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    backend: Arc<str>,
    server: Arc<str>,
    plan: CheckPlan,
}

/// A server, by backend and server name.
type ServerKey = (Arc<str>, Arc<str>);

/// The running checks of a node.
#[derive(Default)]
pub struct Checks {
    running: Mutex<HashMap<ServerKey, (Spec, AbortHandle)>>,
}

impl Checks {
    /// Starts the checks `plan` adds or changes and stops the ones it drops. Servers
    /// without a check go back to `Unchecked`.
    pub fn reconcile(&self, plan: &Plan) {
        let mut wanted = HashMap::new();
        for b in &plan.backends {
            for s in &b.servers {
                let Some(check) = &s.check else {
                    s.counters.health.set(Health::Unchecked);
                    continue;
                };
                let spec = Spec {
                    backend: b.name.clone(),
                    server: s.name.clone(),
                    plan: check.clone(),
                };
                wanted.insert((b.name.clone(), s.name.clone()), (spec, s.counters.clone()));
            }
        }
        let mut running = self.running.lock().expect("checks lock");
        running.retain(|key, (spec, handle)| {
            let keep = wanted.get(key).is_some_and(|(w, _)| w == spec);
            if !keep {
                handle.abort();
            }
            keep
        });
        for (key, (spec, counters)) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let handle = tokio::spawn(run(spec.clone(), counters)).abort_handle();
            running.insert(key, (spec, handle));
        }
    }
}

async fn run(spec: Spec, counters: Arc<ServerCounters>) {
    let check = &spec.plan;
    // Spread the first checks of many servers over the interval.
    let jitter = rand::random_range(0..check.inter.as_millis().max(1) as u64);
    tokio::time::sleep(Duration::from_millis(jitter)).await;
    let (mut failures, mut successes) = (0u32, 0u32);
    loop {
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(check.timeout, probe(check))
            .await
            .unwrap_or(Err(ProbeError::Timeout));
        let was = counters.health.get();
        match result {
            Ok(()) => {
                failures = 0;
                successes = successes.saturating_add(1);
                let up = match was {
                    Health::Down => successes >= check.rise,
                    _ => true,
                };
                if up && was != Health::Up {
                    counters
                        .health
                        .set_because(Health::Up, format!("{successes} check(s) passed"));
                    if was == Health::Down {
                        counters.health_transitions.fetch_add(1, Relaxed);
                        tracing::warn!(backend = %spec.backend, server = %spec.server, checks = successes, "server is UP");
                    }
                }
            }
            Err(reason) => {
                successes = 0;
                failures = failures.saturating_add(1);
                counters.check_failures.fetch_add(1, Relaxed);
                if was != Health::Down && failures >= check.fall {
                    counters.health.set_because(
                        Health::Down,
                        format!("{failures} check(s) failed, last: {reason}"),
                    );
                    counters.health_transitions.fetch_add(1, Relaxed);
                    tracing::warn!(backend = %spec.backend, server = %spec.server, %reason, checks = failures, "server is DOWN");
                } else {
                    tracing::debug!(backend = %spec.backend, server = %spec.server, %reason, "health check failed");
                }
            }
        }
        tokio::time::sleep_until(started + check.inter).await;
    }
}

/// Why a check failed (logged with the transition).
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("timeout")]
    Timeout,
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("send: {0}")]
    Send(std::io::Error),
    #[error("read: {0}")]
    Read(std::io::Error),
    #[error("connection closed before a response")]
    Closed,
    #[error("response head too large")]
    HeadTooLarge,
    #[error("invalid response: {0}")]
    Invalid(httparse::Error),
    #[error("status {0}")]
    Status(u16),
    #[error("wrong Sec-WebSocket-Accept {0:?}")]
    Accept(Option<String>),
}

/// One check; the error says why it failed.
async fn probe(check: &CheckPlan) -> Result<(), ProbeError> {
    let mut stream = match check.target.parse::<SocketAddr>() {
        Ok(addr) => TcpStream::connect(addr).await,
        Err(_) => TcpStream::connect(check.target.as_str()).await,
    }
    .map_err(ProbeError::Connect)?;
    let websocket = check.kind == CheckKind::Websocket;
    if check.kind == CheckKind::Tcp {
        return Ok(());
    }
    let key = crate::wskey::new_key();
    let mut req = format!("{} {} {}\r\n", check.method, check.uri, check.version);
    let has = |name: &str| {
        check
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    if !has("host") {
        req.push_str(&format!("Host: {}\r\n", check.target));
    }
    // A check that performs a WebSocket handshake always sends a fresh key (a configured
    // one, like the article's sample nonce, is replaced).
    let sends_key = websocket || has("sec-websocket-key");
    for (name, value) in &check.headers {
        if sends_key && name.eq_ignore_ascii_case("sec-websocket-key") {
            continue;
        }
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    let upgrade = websocket || has("upgrade");
    if websocket {
        for (name, value) in [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
        ] {
            if !has(name) {
                req.push_str(&format!("{name}: {value}\r\n"));
            }
        }
    }
    if sends_key {
        req.push_str(&format!("Sec-WebSocket-Key: {key}\r\n"));
    }
    if !upgrade {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(ProbeError::Send)?;

    let mut buf = Vec::with_capacity(1024);
    let (status, accept) = loop {
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await.map_err(ProbeError::Read)?;
        if n == 0 {
            return Err(ProbeError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let accept = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                    .map(|h| String::from_utf8_lossy(h.value).trim().to_string());
                break (resp.code.unwrap_or(0), accept);
            }
            Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => {}
            Ok(httparse::Status::Partial) => return Err(ProbeError::HeadTooLarge),
            Err(e) => return Err(ProbeError::Invalid(e)),
        }
    };
    if !check
        .expect
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    {
        return Err(ProbeError::Status(status));
    }
    if status == 101 && sends_key {
        if accept.as_deref() != Some(crate::wskey::accept_key(&key).as_str()) {
            return Err(ProbeError::Accept(accept));
        }
        // Close cleanly: a masked close frame (1000), then wait briefly for the reply.
        let mask = rand::random::<[u8; 4]>();
        let payload = 1000u16.to_be_bytes();
        let mut frame = vec![0x88, 0x80 | 2];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let _ = stream.write_all(&frame).await;
        let mut sink = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut sink)).await;
    }
    Ok(())
}
