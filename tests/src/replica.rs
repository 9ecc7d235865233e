//! Control-plane replicas sharing one PostgreSQL database, for the tests that run
//! several: each in a directory of its own under the test's, named with
//! `--replica-id`, and the node-stream endpoints a node lists to reach one first and the
//! other on failover.

use std::path::Path;

use crate::harness::ControlPlane;

/// Starts the replica `name` on the database `url`, with its files in `dir/name`.
pub fn start(dir: &Path, url: &str, name: &str) -> ControlPlane {
    let own = dir.join(name);
    std::fs::create_dir_all(&own).expect("a replica's directory");
    ControlPlane::start_with_args(&own, &["--database", url, "--replica-id", name])
}

/// `--control-plane` for a node that connects to `first` and fails over to `then`.
pub fn endpoints(first: &ControlPlane, then: &ControlPlane) -> String {
    format!("{},{}", first.node_url, then.node_url)
}
