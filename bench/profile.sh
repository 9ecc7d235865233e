#!/usr/bin/env bash
# Profiles the node under one workload: `bench/profile.sh handshake|echo|h2echo|latency` → perf report
# (`SORT=dso` for the kernel / node / libc split); `bench/profile.sh idle` → what holds
# the heap with 9,000 idle tunnels open, by call site (heaptrack, on a node built with
# the system allocator so heaptrack sees every allocation).
# TARGET=haproxy profiles HAProxy instead (bench/results/haproxy.cfg) for a side-by-side
# split; both print the proxy's system calls per upgrade or message.
# PERF_DATA=file keeps the perf recording for a closer look (perf report -i file);
# CALLGRAPH=dwarf records callers through code built without frame pointers;
# FLAME=file.svg also draws a flame graph (needs `cargo install inferno`).
# WAKES=1 also counts, over 2 s in the middle of the load, how often the proxy's threads
# woke the echo backend and the load generator (sched_waking, per upgrade or message).
# Same pinning and configuration as bench/run.sh. Needs perf (Debian's linux-perf), or heaptrack for idle.
set -euo pipefail
cd "$(dirname "$0")/.."
WL=${1:-handshake}
if [ "$WL" = idle ] && [ "${TARGET:-sluice}" != sluice ]; then
  echo "idle profiles the node's heap; for HAProxy's RSS per tunnel run bench/run.sh" >&2
  exit 2
fi
ulimit -n "$(ulimit -Hn)"
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
PORT=18081
if [ "${TARGET:-sluice}" = haproxy ]; then
  # The profiled workloads are plain: the TLS bind (its certificate is made by run.sh) is left out.
  grep -v 'ssl crt' bench/results/haproxy.cfg > "$T/haproxy.cfg"
  taskset -c 0 haproxy -f "$T/haproxy.cfg" -p "$T/haproxy.pid" -D
  sleep 0.5
  NODE=$(cat "$T/haproxy.pid")
  pids+=("$NODE")
  PORT=18080
else
  taskset -c 1 "$B/sluice-cp" --database "$T/db" --api-listen 127.0.0.1:17080 --node-listen 127.0.0.1:17081 \
    --admin-token a --node-token n > /dev/null 2>&1 & pids+=($!)
  sleep 0.5
  curl -fsS -X PUT -H "Authorization: Bearer a" http://127.0.0.1:17080/api/v1/config --data @bench/profile-config.json > /dev/null
  [ "$WL" = idle ] && WRAP=(heaptrack -o "$T/heap")
  RUST_LOG=warn taskset -c 0 "${WRAP[@]}" "$DP" --control-plane http://127.0.0.1:17081 --token n --node-id prof \
    --worker-threads 1 --admin-listen 127.0.0.1:0 > /dev/null 2>&1 & NODE=$!
  pids+=("$NODE")
fi
sleep 1
if [ "$WL" = idle ]; then
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
perf stat -e raw_syscalls:sys_enter -x, -o "$T/syscalls" -p "$NODE" -- sleep 6 > /dev/null 2>&1 &
STAT=$!
if [ -n "${WAKES:-}" ]; then
  (sleep 1.5; perf record -e sched:sched_waking -a -o "$T/wakes.data" -- sleep 2 > /dev/null 2>&1) &
  WAKE=$!
fi
case $WL in
  handshake) taskset -c 1 "$B/sluice-bench" handshake --target 127.0.0.1:$PORT --seconds 5 --pid "proxy=$NODE" | tee "$T/result" ;;
  h2echo) taskset -c 1 "$B/sluice-bench" h2-echo --target 127.0.0.1:$PORT --seconds 5 --conns 10 --per-conn 10 --size 64 --pid "proxy=$NODE" | tee "$T/result" ;;
  latency) taskset -c 1 "$B/sluice-bench" latency --target 127.0.0.1:$PORT --seconds 5 --conns 100 --rate 10000 --pid "proxy=$NODE" | tee "$T/result" ;;
  *) taskset -c 1 "$B/sluice-bench" echo --target 127.0.0.1:$PORT --seconds 5 --pid "proxy=$NODE" | tee "$T/result" ;;
esac
echo
wait "$PERF" "$STAT" || true
# System calls over the 6 s recording, per upgrade or message of the 5 s load.
python3 - "$T/syscalls" "$T/result" <<'PY'
import json, sys
calls = next(float(l.split(",")[0]) for l in open(sys.argv[1]) if "sys_enter" in l)
r = json.load(open(sys.argv[2]))
ops = r.get("upgrades") or r.get("msgs") or r["msgs_per_s"] * r["cpu"]["wall_s"]
print(f"system calls per {'upgrade' if 'upgrades' in r else 'message'}: {calls / ops:.1f}")
PY
if [ -n "${WAKES:-}" ]; then
  wait "$WAKE" || true
  perf script -i "$T/wakes.data" -F comm,trace 2>/dev/null > "$T/wakes.txt"
  python3 - "$T/wakes.txt" "$T/result" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[2]))
ops = r.get("upgrades") or r.get("msgs") or r["msgs_per_s"] * r["cpu"]["wall_s"]
per_s = ops / r["cpu"]["wall_s"]
proxy = re.compile(r"^\s*(sluice-worker|tokio-rt-worker|sluice-dp|haproxy)")
counts = {"backend": 0, "load generator": 0}
for line in open(sys.argv[1]):
    if not proxy.match(line):
        continue
    target = re.search(r"comm=(\S+)", line)
    if not target:
        continue
    if target.group(1).startswith("sluice-bench-ec"):
        counts["backend"] += 1
    elif target.group(1).startswith("sluice-bench"):
        counts["load generator"] += 1
unit = "upgrade" if "upgrades" in r else "message"
for who, n in counts.items():
    print(f"wake-ups of the {who} by the proxy per {unit}: {n / (per_s * 2):.3f}")
PY
fi
if [ -n "${FLAME:-}" ]; then
  perf script -i "${PERF_DATA:-$T/perf.data}" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph --minwidth 0.5 > "$FLAME"
  echo "flame graph: $FLAME"
fi
perf report -i "${PERF_DATA:-$T/perf.data}" --no-children --sort ${SORT:-dso,symbol} --stdio -g none 2>/dev/null | grep "%" | head -40
