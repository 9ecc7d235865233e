//! Runs the real binaries for end-to-end tests.
//!
//! Binaries are taken from the workspace target directory (the test command builds them
//! first with `cargo build --bins`), or from `SLUICE_BIN_DIR`. Every process binds
//! loopback ports, logs to a file in a temporary directory, is killed on drop, and has
//! its log printed if the test is failing. Waiting is done by polling against a
//! deadline ([`eventually`]), never by fixed sleeps.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::backend::Backend;

/// Where the workspace's binaries are.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_BIN_DIR") {
        return dir.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug")
}

fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --bins` first (or set SLUICE_BIN_DIR)",
        p.display()
    );
    p
}

/// A bind address for node listeners on `ip` with port 0: each node lets the kernel pick
/// a free port and reports it ([`DataPlane::bound`]), so no port is chosen first and
/// released, for another process to take in between.
pub fn any_port(ip: &str) -> SocketAddr {
    format!("{ip}:0").parse().expect("an IP address")
}

/// An address nothing listens on (a port that was free a moment ago), for servers that
/// are meant to be down.
pub fn closed_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
}

/// The port of a `scheme://ip:port` URL.
fn url_port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url:?}"))
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process killed on drop, its log dumped if the thread is panicking.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Spawns `program` with stdout piped (for the ready line) and stderr to a log file,
    /// and waits for a stdout line starting with `ready_prefix`.
    fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: PathBuf,
        ready_prefix: &str,
    ) -> (Proc, String) {
        let log_file = std::fs::File::create(&log).expect("creating a log file");
        let mut child = Command::new(program)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let prefix = ready_prefix.to_string();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && line.starts_with(&prefix) {
                    let _ = tx.send(line);
                    sent = true;
                }
            }
        });
        let mut proc = Proc {
            name: name.to_string(),
            child,
            log,
        };
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let status = proc.child.try_wait().ok().flatten();
                proc.dump_log();
                panic!("{name} did not become ready (exit status: {status:?})");
            }
        };
        (proc, line)
    }

    pub fn dump_log(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(80).collect();
        eprintln!(
            "----- last lines of {} log ({}) -----",
            self.name,
            self.log.display()
        );
        for l in tail.into_iter().rev() {
            eprintln!("{l}");
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (a graceful stop request).
    pub fn terminate(&self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the process: a frozen process keeps its
    /// sockets open and says nothing.
    pub fn freeze(&self, frozen: bool) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let signal = if frozen {
            rustix::process::Signal::STOP
        } else {
            rustix::process::Signal::CONT
        };
        let _ = rustix::process::kill_process(pid, signal);
    }

    /// Waits up to `timeout` for the process to exit; its exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_log();
        }
        self.kill();
    }
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in ready line {line:?}"))
}

/// A running control plane with its own database and tokens.
pub struct ControlPlane {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT` of the REST API.
    pub api: String,
    /// `http://127.0.0.1:PORT` of the node stream.
    pub node_url: String,
    pub admin_token: String,
    pub node_token: String,
    pub db: PathBuf,
    dir: PathBuf,
    /// Extra arguments, kept for restarts.
    extra: Vec<String>,
    api_port: u16,
    node_port: u16,
    restarts: u32,
}

impl ControlPlane {
    /// Starts a control plane with a fresh database in `dir`.
    pub fn start(dir: &Path) -> ControlPlane {
        Self::start_with_args(dir, &[])
    }

    /// Starts a control plane with `extra` command-line arguments.
    pub fn start_with_args(dir: &Path, extra: &[&str]) -> ControlPlane {
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let (admin_token, node_token) = (
            "test-admin-token".to_string(),
            "test-node-token".to_string(),
        );
        let db = dir.join("sluice.db");
        // The first start lets the kernel pick the ports; restarts reuse them.
        let (proc, api, node_url) =
            Self::launch(dir, 0, (0, 0), &db, (&admin_token, &node_token), &extra);
        let (api_port, node_port) = (url_port(&api), url_port(&node_url));
        ControlPlane {
            extra,
            proc,
            api,
            node_url,
            admin_token,
            node_token,
            db,
            dir: dir.to_path_buf(),
            api_port,
            node_port,
            restarts: 0,
        }
    }

    fn launch(
        dir: &Path,
        run: u32,
        (api_port, node_port): (u16, u16),
        db: &Path,
        (admin_token, node_token): (&str, &str),
        extra: &[String],
    ) -> (Proc, String, String) {
        let mut args: Vec<String> = vec![
            "--api-listen".into(),
            format!("127.0.0.1:{api_port}"),
            "--node-listen".into(),
            format!("127.0.0.1:{node_port}"),
            "--admin-token".into(),
            admin_token.into(),
            "--node-token".into(),
            node_token.into(),
            "--node-stale-after".into(),
            "5s".into(),
        ];
        // A `--database` among `extra` (PostgreSQL) replaces the SQLite file.
        if !extra.iter().any(|a| a == "--database") {
            args.extend(["--database".to_string(), db.display().to_string()]);
        }
        args.extend(extra.iter().cloned());
        let log = dir.join(format!("cp-{run}.log"));
        let (proc, line) = Proc::spawn(
            "sluice-cp",
            &bin("sluice-cp"),
            &args,
            log,
            "sluice-cp ready",
        );
        let api = field(&line, "api").to_string();
        let node_url = field(&line, "node").to_string();
        (proc, api, node_url)
    }

    /// Stops the process (the database stays).
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Starts it again on the same ports and database.
    pub fn restart(&mut self) {
        self.proc.kill();
        self.restarts += 1;
        let (proc, api, node_url) = Self::launch(
            &self.dir,
            self.restarts,
            (self.api_port, self.node_port),
            &self.db,
            (&self.admin_token, &self.node_token),
            &self.extra,
        );
        self.proc = proc;
        self.api = api;
        self.node_url = node_url;
    }

    pub fn api(&self) -> Api {
        Api::new(&self.api, &self.admin_token)
    }
}

/// A running data-plane node.
pub struct DataPlane {
    pub proc: Proc,
    pub node_id: String,
    /// `http://127.0.0.1:PORT` of its admin listener (`/metrics`).
    pub admin: String,
}

impl DataPlane {
    pub fn start(dir: &Path, cp: &ControlPlane, node_id: &str) -> DataPlane {
        Self::start_with_token(dir, cp, node_id, &cp.node_token.clone())
    }

    pub fn start_with_token(
        dir: &Path,
        cp: &ControlPlane,
        node_id: &str,
        token: &str,
    ) -> DataPlane {
        Self::start_with_args(dir, cp, node_id, token, &[])
    }

    /// Starts a node with `extra` command-line arguments (`--labels` among them replaces
    /// the default `zone=test`).
    pub fn start_with_args(
        dir: &Path,
        cp: &ControlPlane,
        node_id: &str,
        token: &str,
        extra: &[&str],
    ) -> DataPlane {
        let mut args: Vec<String> = Vec::new();
        // A `--control-plane` among `extra` (several replicas) replaces `cp`'s.
        if !extra.contains(&"--control-plane") {
            args.extend(["--control-plane".to_string(), cp.node_url.clone()]);
        }
        args.extend::<Vec<String>>(vec![
            "--token".into(),
            token.into(),
            "--node-id".into(),
            node_id.into(),
            "--stats-interval".into(),
            "500ms".into(),
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
        ]);
        if !extra.contains(&"--labels") {
            args.extend(["--labels".to_string(), "zone=test".to_string()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = dir.join(format!("dp-{node_id}.log"));
        let (proc, line) = Proc::spawn(node_id, &bin("sluice-dp"), &args, log, "sluice-dp ready");
        DataPlane {
            proc,
            node_id: node_id.to_string(),
            admin: field(&line, "admin").to_string(),
        }
    }

    /// The node's Prometheus metrics (its admin listener's `/metrics`).
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .expect("the node's admin listener")
            .text()
            .await
            .unwrap_or_default()
    }

    /// The address the node accepts on for the configured bind `configured` (the port
    /// it got when `configured` has port 0); waits until the node listens there.
    pub async fn bound(&self, configured: SocketAddr) -> SocketAddr {
        let url = format!("{}/listeners", self.admin);
        let want = configured.to_string();
        eventually(
            Duration::from_secs(10),
            &format!("{} to listen on {configured}", self.node_id),
            || async {
                let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
                let list: Value = serde_json::from_str(&text).ok()?;
                list.as_array()?
                    .iter()
                    .find(|l| l["address"] == want.as_str())?["bound"]
                    .as_str()?
                    .parse()
                    .ok()
            },
        )
        .await
    }

    /// The node's open listeners, as `GET /listeners` on its admin listener lists them.
    pub async fn listeners(&self) -> Vec<Value> {
        let text = reqwest::get(format!("{}/listeners", self.admin))
            .await
            .expect("the admin listener")
            .text()
            .await
            .expect("a body");
        match serde_json::from_str(&text) {
            Ok(Value::Array(list)) => list,
            _ => panic!("not a list of listeners: {text}"),
        }
    }
}

/// A REST client with the admin token.
#[derive(Clone)]
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// A REST response: status, ETag and JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub etag: Option<String>,
    pub json: Value,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    pub fn with_token(&self, token: &str) -> Api {
        Api::new(&self.base, token)
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Reply {
        self.try_request(method, path, body, if_match)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Like [`Api::request`], with the transport error (the control plane is gone, the
    /// connection broke) returned instead of a panic.
    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Reply, reqwest::Error> {
        let url = format!("{}{}", self.base, path);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut req = self.http.request(method, &url);
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(m) = if_match {
            req = req.header("If-Match", m);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply { status, etag, json })
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, None).await
    }

    /// The configuration's current version (the `ETag` of `GET /api/v1/config`).
    pub async fn version(&self) -> u64 {
        let r = self.get("/api/v1/config").await;
        r.etag
            .as_deref()
            .and_then(|e| e.trim_matches('"').parse().ok())
            .unwrap_or_else(|| panic!("no version ETag: {r:?}"))
    }

    /// `PUT /api/v1/config`, asserting success; returns the new version.
    pub async fn put_config(&self, doc: &Value) -> u64 {
        let r = self.request("PUT", "/api/v1/config", Some(doc), None).await;
        assert_eq!(r.status, 200, "PUT /api/v1/config failed: {}", r.json);
        r.json["version"].as_u64().expect("a version")
    }

    /// The node entry of `GET /api/v1/nodes`.
    pub async fn node(&self, id: &str) -> Option<Value> {
        let r = self.get("/api/v1/nodes").await;
        r.json.as_array()?.iter().find(|n| n["id"] == id).cloned()
    }

    /// Waits until node `id` reports `version` applied and is connected.
    pub async fn wait_applied(&self, id: &str, version: u64, timeout: Duration) {
        eventually(
            timeout,
            &format!("node {id} to apply version {version}"),
            || async {
                let n = self.node(id).await?;
                (n["connected"] == true && n["applied_version"].as_u64()? >= version).then_some(())
            },
        )
        .await
    }
}

/// A minimal config document: one frontend on `bind`, routing `/ws/...` WebSocket
/// upgrades per path prefix and everything else to `default`.
/// The strings of a JSON array, sorted (node ids in API answers).
pub fn ids(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap_or_default().to_string())
        .collect();
    out.sort();
    out
}

pub fn simple_config(bind: SocketAddr, backends: &[(&str, &[SocketAddr])], default: &str) -> Value {
    let backends: Vec<Value> = backends
        .iter()
        .map(|(name, servers)| {
            serde_json::json!({
                "name": name,
                "balance": "roundrobin",
                "servers": servers.iter().enumerate().map(|(i, a)| serde_json::json!({
                    "name": format!("{name}-{i}"),
                    "address": a.to_string(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "defaults": { "timeouts": { "connect": "2s", "client": "30s", "server": "30s", "tunnel": "1h", "http_request": "5s" } },
        "frontends": [{
            "name": "web",
            "binds": [{ "address": bind.to_string() }],
            "default_backend": default,
        }],
        "backends": backends,
    })
}

/// A WebSocket client connection through the proxy.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `ws://{addr}{path}`.
pub async fn ws_connect(addr: SocketAddr, path: &str) -> Ws {
    let (ws, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("WebSocket upgrade to {addr}{path} failed: {e}"));
    assert_eq!(resp.status(), 101);
    ws
}

/// Opens a WebSocket to `ws://{addr}{path}` from the local address `src` (any of
/// 127.0.0.0/8 works on loopback); the HTTP status when the upgrade is refused.
pub async fn ws_connect_from(addr: SocketAddr, src: &str, path: &str) -> Result<Ws, u16> {
    let sock = tokio::net::TcpSocket::new_v4().expect("a socket");
    sock.bind(format!("{src}:0").parse().expect("an IPv4 address"))
        .expect("binding the source address");
    let tcp = sock.connect(addr).await.expect("connecting");
    match tokio_tungstenite::client_async(
        format!("ws://{addr}{path}"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("WebSocket upgrade to {addr}{path} from {src} failed: {e}"),
    }
}

/// Sends `text` and returns the next text message (5 s limit).
pub async fn ws_roundtrip(ws: &mut Ws, text: &str) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(text.to_string()))
        .await
        .expect("sending on the tunnel");
    let next = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(_)) => continue,
                other => panic!("tunnel ended: {other:?}"),
            }
        }
    })
    .await;
    next.expect("an answer within 5 s")
}

/// Which backend server answers a new WebSocket connection to `path`.
pub async fn ws_whoami(addr: SocketAddr, path: &str) -> String {
    let mut ws = ws_connect(addr, path).await;
    let who = ws_roundtrip(&mut ws, "whoami").await;
    let _ = ws.close(None).await;
    who
}

/// A plain HTTP GET through the proxy; returns status and the echo backend's JSON.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let mut req = client.get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("an HTTP response");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Backends, a control plane and one node (`node-a`), the shared setup of the end-to-end
/// tests. [`fixture`] also applies a configuration; [`Fixture::start`] leaves that to the
/// test.
pub struct Fixture {
    pub cp: ControlPlane,
    pub dp: DataPlane,
    pub backends: Vec<Backend>,
    /// Where `node-a` accepts connections for the configuration [`fixture`] applied (its
    /// first bind); `127.0.0.1:0` until one is applied.
    pub bind: SocketAddr,
    /// Dropped last, so logs can still be dumped when a test fails.
    dir: tempfile::TempDir,
}

impl Fixture {
    /// Starts the backends named in `servers`, a control plane and `node-a`.
    pub async fn start(servers: &[&str]) -> Fixture {
        Self::start_with(servers, &[], &[]).await
    }

    /// Like [`Fixture::start`], with extra arguments for the control plane and the node.
    pub async fn start_with(servers: &[&str], cp_args: &[&str], node_args: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut backends = Vec::new();
        for name in servers {
            backends.push(Backend::start(name, "127.0.0.1:0").await.unwrap());
        }
        let cp = ControlPlane::start_with_args(dir.path(), cp_args);
        let dp = DataPlane::start_with_args(
            dir.path(),
            &cp,
            "node-a",
            &cp.node_token.clone(),
            node_args,
        );
        Fixture {
            cp,
            dp,
            backends,
            bind: any_port("127.0.0.1"),
            dir,
        }
    }

    /// The directory of this test's databases and logs (for more processes).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn backend(&self, name: &str) -> &Backend {
        self.backends.iter().find(|b| b.name == name).unwrap()
    }

    /// The address of the backend `name`, or one nothing listens on when there is no such
    /// backend (a server meant to be down).
    pub fn addr(&self, name: &str) -> String {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .map_or_else(|| closed_addr().to_string(), |b| b.addr.to_string())
    }

    /// Applies `doc` through the REST API and waits until `node-a` runs it.
    pub async fn apply(&self, doc: &Value) -> u64 {
        let api = self.cp.api();
        let v = api.put_config(doc).await;
        api.wait_applied("node-a", v, Duration::from_secs(10)).await;
        v
    }

    /// Where `node-a` accepts connections for the configured bind `configured`.
    pub async fn bound(&self, configured: SocketAddr) -> SocketAddr {
        self.dp.bound(configured).await
    }

    /// Applies [`simple_config`] on `127.0.0.1:0` with one backend `echo` holding the
    /// server `backend`; returns where `node-a` accepts connections for it.
    pub async fn serve_echo(&self, backend: &str) -> SocketAddr {
        let configured = any_port("127.0.0.1");
        let addr = self.backend(backend).addr;
        self.apply(&simple_config(configured, &[("echo", &[addr])], "echo"))
            .await;
        self.bound(configured).await
    }
}

/// Starts backends named in `servers`, the control plane and a node, applies
/// `make(bind, addresses)` with `bind` = `127.0.0.1:0`, and learns the port the node got.
pub async fn fixture(
    servers: &[&str],
    make: impl Fn(SocketAddr, &dyn Fn(&str) -> String) -> Value,
) -> Fixture {
    let mut f = Fixture::start(servers).await;
    let configured = f.bind;
    f.apply(&make(configured, &|n| f.addr(n))).await;
    f.bind = f.bound(configured).await;
    f
}

/// A new, empty PostgreSQL database on the test server (`SLUICE_TEST_POSTGRES`, an admin
/// URL; the test command starts one), as a URL for `sluice-cp --database`. `None` when no
/// server is given — unless `SLUICE_REQUIRE_POSTGRES` is set, which makes that a failure.
pub async fn postgres_database() -> Option<String> {
    use sqlx::Executor;
    let admin = match std::env::var("SLUICE_TEST_POSTGRES") {
        Ok(a) if !a.is_empty() => a,
        _ => {
            assert!(
                std::env::var_os("SLUICE_REQUIRE_POSTGRES").is_none(),
                "SLUICE_REQUIRE_POSTGRES is set but SLUICE_TEST_POSTGRES names no server"
            );
            eprintln!("no PostgreSQL test server (SLUICE_TEST_POSTGRES): skipped");
            return None;
        }
    };
    sqlx::any::install_default_drivers();
    let name = format!("sluice_e2e_{:016x}", rand::random::<u64>());
    let pool = sqlx::AnyPool::connect(&admin)
        .await
        .expect("the PostgreSQL test server");
    pool.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("creating a test database");
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database name");
    Some(format!("{base}/{name}"))
}
