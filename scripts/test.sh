#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit tests and the end-to-end suite
# (which starts the real binaries, so they are built first).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --bins --quiet
cargo test --workspace
