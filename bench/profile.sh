#!/usr/bin/env bash
# Profiles the node under one workload: `bench/profile.sh handshake|echo` → perf report
# (`SORT=dso` for the kernel / node / libc split).
# Same pinning as bench/run.sh. Needs perf (Debian's linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
WL=${1:-handshake}
cargo build --release --quiet -p sluice-control-plane -p sluice-data-plane -p sluice-bench
B=target/release
T=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$T"' EXIT
taskset -c 1 "$B/sluice-bench-echo" 127.0.0.1:19001 127.0.0.1:19002 > /dev/null & pids+=($!)
taskset -c 1 "$B/sluice-cp" --database "$T/db" --api-listen 127.0.0.1:17080 --node-listen 127.0.0.1:17081 \
  --admin-token a --node-token n > /dev/null 2>&1 & pids+=($!)
sleep 0.5
curl -fsS -X PUT -H "Authorization: Bearer a" http://127.0.0.1:17080/api/v1/config --data '{
  "frontends": [{ "name": "fe", "binds": [{ "address": "127.0.0.1:18081" }],
    "acls": [{ "name": "is_websocket", "expr": "hdr(Upgrade) -i websocket" },
             { "name": "is_ws_connection", "expr": "hdr_sub(Connection) -i upgrade" }],
    "use_backend": [{ "backend": "bench", "if": "is_websocket is_ws_connection" }],
    "default_backend": "bench" }],
  "backends": [{ "name": "bench", "servers": [{ "name": "s1", "address": "127.0.0.1:19001" },
                                             { "name": "s2", "address": "127.0.0.1:19002" }] }],
  "defaults": { "forwardfor": true } }' > /dev/null
RUST_LOG=warn taskset -c 0 "$B/sluice-dp" --control-plane http://127.0.0.1:17081 --token n --node-id prof \
  --worker-threads 1 --admin-listen 127.0.0.1:0 > /dev/null 2>&1 & NODE=$!
pids+=("$NODE")
sleep 1
perf record -F 2000 -g -p "$NODE" -o "$T/perf.data" -- sleep 6 > /dev/null 2>&1 &
PERF=$!
case $WL in
  handshake) taskset -c 1 "$B/sluice-bench" handshake --target 127.0.0.1:18081 --seconds 5 --pid "proxy=$NODE" ;;
  *) taskset -c 1 "$B/sluice-bench" echo --target 127.0.0.1:18081 --seconds 5 --pid "proxy=$NODE" ;;
esac
wait "$PERF" || true
perf report -i "$T/perf.data" --no-children --sort ${SORT:-dso,symbol} --stdio -g none 2>/dev/null | grep "%" | head -40
