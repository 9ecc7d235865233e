//! The browser side of the dashboard tests: scripts in `tests/browser/` run by Node.js
//! with playwright-core driving Debian's Chromium, and where their screenshots go.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// `tests/browser/`, with its scripts and `node_modules`.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Where screenshots are saved (`$SLUICE_SCREENSHOTS`, default `target/screenshots`).
pub fn screenshots() -> PathBuf {
    let d = std::env::var_os("SLUICE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots"));
    std::fs::create_dir_all(&d).expect("the screenshot directory");
    d
}

/// Panics unless playwright-core is installed (the test command installs it).
pub fn require() {
    assert!(
        dir().join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
}

/// Runs `script` (in `tests/browser/`) with `env` and `SLUICE_SHOTS` set, and panics
/// with its output unless it ends well, printing `OK`, within two minutes.
pub async fn run(script: &str, env: &[(&str, &str)]) {
    require();
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(dir().join(script))
        .env("SLUICE_SHOTS", screenshots())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish in two minutes"))
        .expect("running node (Node.js) for a browser test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "OK"),
        "{script} failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
