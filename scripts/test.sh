#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit tests and the end-to-end suite
# (which starts the real binaries, so they are built first).
set -euo pipefail
cd "$(dirname "$0")/.."
# The dashboard test drives a real browser: Debian's chromium.
if [ ! -x "${SLUICE_CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "installing chromium for the dashboard test" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --bins --quiet
cargo test --workspace
