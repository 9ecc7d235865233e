#!/usr/bin/env bash
# Counts the node's user-space instructions per upgrade (HTTP/1.1, or an HTTP/2 WebSocket
# stream for h2streams) or per 64-byte echo message (over HTTP/2 for h2echo) under
# valgrind's callgrind: repeatable for the same binary and inputs, whatever else the
# machine is doing, so two builds can be compared where timed runs are too noisy.
#
#   bench/instructions.sh handshake|echo|h2streams|h2echo [NODE_BINARY]
#
# NODE_BINARY defaults to this tree's release build (built first); pass another build of
# sluice-dp to compare. Only instructions between the start and the end of the measured
# load are counted (a warm-up load runs first). Needs valgrind; pinning as bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
WL=${1:-handshake}
cargo build --release --quiet -p sluice-control-plane -p sluice-data-plane -p sluice-bench
B=target/release
DP=${2:-$B/sluice-dp}
OUT=$(mktemp -d)
T=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$T" "$OUT"' EXIT
ulimit -n "$(ulimit -Hn)"
taskset -c 1 "$B/sluice-bench-echo" 127.0.0.1:19001 127.0.0.1:19002 > /dev/null & pids+=($!)
taskset -c 1 "$B/sluice-cp" --database "$T/db" --api-listen 127.0.0.1:17080 --node-listen 127.0.0.1:17081 \
    --admin-token a --node-token n > /dev/null 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:17080/healthz 2>/dev/null && break; sleep 0.1; done
curl -fsS -X PUT -H "Authorization: Bearer a" http://127.0.0.1:17080/api/v1/config --data @bench/profile-config.json > /dev/null
RUST_LOG=warn taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/cg.%p" \
  "$DP" --control-plane http://127.0.0.1:17081 --token n --node-id prof --worker-threads 1 --admin-listen 127.0.0.1:0 > "$OUT/node.log" 2>&1 & NODE=$!
pids+=("$NODE")
for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/18081) 2>/dev/null && break; sleep 0.1; done
sleep 1
case $WL in
  handshake) cmd=(handshake --target 127.0.0.1:18081 --seconds 3) ;;
  echo) cmd=(echo --target 127.0.0.1:18081 --seconds 3) ;;
  h2streams) cmd=(h2-streams --target 127.0.0.1:18081 --seconds 3 --conns 10 --per-conn 5) ;;
  h2echo) cmd=(h2-echo --target 127.0.0.1:18081 --seconds 3 --conns 10 --per-conn 10 --size 64) ;;
  *) echo "usage: bench/instructions.sh handshake|echo|h2streams|h2echo [NODE_BINARY]" >&2; exit 2 ;;
esac
taskset -c 1 "$B/sluice-bench" "${cmd[@]}" > /dev/null   # warm-up
callgrind_control -i on "$NODE" > /dev/null
taskset -c 1 "$B/sluice-bench" "${cmd[@]}" > "$OUT/result.json"
callgrind_control -i off "$NODE" > /dev/null
callgrind_control -d "$NODE" > /dev/null
sleep 1
python3 - "$OUT" <<'PY'
import json, sys, glob
out = sys.argv[1]
r = json.load(open(f"{out}/result.json"))
ops = r.get("upgrades") or r.get("msgs") or r["msgs_per_s"] * r["cpu"]["wall_s"]
total = 0
for f in glob.glob(f"{out}/cg.*"):
    for line in open(f):
        if line.startswith("summary:") or line.startswith("totals:"):
            total = max(total, int(line.split()[1]))
unit = "upgrade" if "upgrades" in r else "message"
print(f"{total} instructions / {ops:.0f} {unit}s = {total / ops:.0f} per {unit}")
PY
