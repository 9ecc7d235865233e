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
# ... through playwright-core (npm, pinned in tests/browser/package-lock.json), run by
# Node.js.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing Node.js for the dashboard test" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi
# The store's suite also runs on PostgreSQL: a throwaway server, stopped at the end.
if [ -z "${SLUICE_TEST_POSTGRES:-}" ]; then
  read -r pg_url pg_dir < <(./scripts/postgres.sh)
  export SLUICE_TEST_POSTGRES=$pg_url
  trap './scripts/postgres.sh stop "$pg_dir"' EXIT
fi
export SLUICE_REQUIRE_POSTGRES=1
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --bins --quiet
# Every test binary runs even when one fails; the closing line totals the whole run.
log=$(mktemp)
trap 'rm -f "$log"; [ -z "${pg_dir:-}" ] || ./scripts/postgres.sh stop "$pg_dir"' EXIT
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(awk '/^test result:/ {s += $4} END {print s + 0}' "$log")
failed=$(awk '/^test result:/ {s += $6} END {print s + 0}' "$log")
# A test binary that did not build or crashed has no result line: count it as failed.
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "$passed passed, $failed failed"
exit "$status"
