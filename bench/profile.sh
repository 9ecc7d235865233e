#!/usr/bin/env bash
# Profiles the node under one workload: `bench/profile.sh handshake|echo` → perf report
# (`SORT=dso` for the kernel / node / libc split); `bench/profile.sh idle` → what holds
# the heap with 9,000 idle tunnels open, by call site (heaptrack, on a node built with
# the system allocator so heaptrack sees every allocation).
# PERF_DATA=file keeps the perf recording for a closer look (perf report -i file);
# CALLGRAPH=dwarf records callers through code built without frame pointers.
# Same pinning as bench/run.sh. Needs perf (Debian's linux-perf), or heaptrack for idle.
set -euo pipefail
cd "$(dirname "$0")/.."
WL=${1:-handshake}
cargo build --release --quiet -p sluice-control-plane -p sluice-data-plane -p sluice-bench
B=target/release
DP=$B/sluice-dp
WRAP=()
if [ "$WL" = idle ]; then
  CARGO_TARGET_DIR=target/sysalloc cargo build --release --quiet -p sluice-data-plane --no-default-features
  DP=target/sysalloc/release/sluice-dp
fi
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
[ "$WL" = idle ] && WRAP=(heaptrack -o "$T/heap")
RUST_LOG=warn taskset -c 0 "${WRAP[@]}" "$DP" --control-plane http://127.0.0.1:17081 --token n --node-id prof \
  --worker-threads 1 --admin-listen 127.0.0.1:0 > /dev/null 2>&1 & NODE=$!
pids+=("$NODE")
sleep 1
if [ "$WL" = idle ]; then
  ulimit -n "$(ulimit -Hn)"
  REAL=$(pgrep -f "^$DP --control-plane" | tail -1)
  taskset -c 1 "$B/sluice-bench" idle --target 127.0.0.1:18081 --steps 1000,9000 --pid "proxy=$REAL"
  echo
  kill "$REAL"
  while kill -0 "$REAL" 2>/dev/null; do sleep 0.1; done
  sleep 1
  # The peak is 9,000 tunnels plus the handshakes in flight; each site's share per
  # tunnel is its bytes / 9,000.
  heaptrack_print -f "$T"/heap*.zst --print-peaks 1 --print-allocators 0 --print-temporary 0 \
    --print-leaks 0 --peak-limit 3 --sub-peak-limit 10 2>/dev/null > "$T/peaks.txt"
  grep "^peak heap" "$T/peaks.txt"
  # One line per call site: bytes at the peak, calls, the allocating frame, our frame.
  python3 - "$T/peaks.txt" <<'PY'
import re, sys
skip = re.compile(r"^(at |in )|alloc::|__rust|_RNv|raw_vec|boxed|core::|std::|aligned_malloc|bytes::bytes_mut")
lines = open(sys.argv[1]).read().split("\n")
for i, l in enumerate(lines):
    if not l.strip().endswith("calls from:"):
        continue
    frames = []
    for f in lines[i + 1:]:
        f = f.strip()
        if "consumed over" in f:
            break
        if f and not skip.search(f):
            frames.append(re.sub(r"::h[0-9a-f]{16}$", "", f))
    ours = next((f for f in frames if f.startswith("sluice")), "")
    print(f"{l.strip():34} {frames[0][:70] if frames else '':70} {ours[:60]}")
PY
  exit 0
fi
perf record -F 2000 --call-graph "${CALLGRAPH:-fp}" -p "$NODE" -o "${PERF_DATA:-$T/perf.data}" -- sleep 6 > /dev/null 2>&1 &
PERF=$!
case $WL in
  handshake) taskset -c 1 "$B/sluice-bench" handshake --target 127.0.0.1:18081 --seconds 5 --pid "proxy=$NODE" ;;
  *) taskset -c 1 "$B/sluice-bench" echo --target 127.0.0.1:18081 --seconds 5 --pid "proxy=$NODE" ;;
esac
wait "$PERF" || true
perf report -i "${PERF_DATA:-$T/perf.data}" --no-children --sort ${SORT:-dso,symbol} --stdio -g none 2>/dev/null | grep "%" | head -40
