#!/usr/bin/env bash
# The control plane under a fleet: N fake nodes (sluice-bench-fakenodes) report stats
# every 2 s for SECS seconds to a release sluice-cp on a fresh SQLite database. Prints
# the control plane's CPU and memory, the database's growth, the rows per history tier
# and the steady-state size the retention bounds it to, and the time of a few reads.
#   NODES=200 SECS=600 bench/fleet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-200}
SECS=${SECS:-600}
cargo build --release --quiet -p sluice-control-plane -p sluice-bench
bin=target/release
dir=$(mktemp -d)
trap 'kill $cp $fake 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT

"$bin/sluice-cp" --database "$dir/cp.db" --api-listen 127.0.0.1:0 --node-listen 127.0.0.1:0 \
  --admin-token bench-admin --node-token bench-node > "$dir/cp.out" 2> "$dir/cp.log" &
cp=$!
for _ in $(seq 1 100); do grep -q "sluice-cp ready" "$dir/cp.out" && break; sleep 0.1; done
api=$(sed -n 's/.*api=\([^ ]*\).*/\1/p' "$dir/cp.out")
node=$(sed -n 's/.*node=\([^ ]*\).*/\1/p' "$dir/cp.out")

"$bin/sluice-bench-fakenodes" --control-plane "$node" --token bench-node --nodes "$NODES" \
  --seconds "$SECS" 2> "$dir/fake.log" &
fake=$!

hz=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$cp/stat"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$cp/status"; }
dbsize() { du -cb "$dir"/cp.db* | tail -1 | cut -f1; }

sleep 60 # warm-up: every node connected, the first buckets written
c0=$(cpu); d0=$(dbsize); t0=$(date +%s)
peak=0
connected=0
while kill -0 $fake 2>/dev/null; do
  r=$(rss); [ "$r" -gt "$peak" ] && peak=$r
  c=$(curl -fsS -H "Authorization: Bearer bench-admin" "$api/api/v1/nodes" \
    | python3 -c 'import json,sys; print(sum(n["connected"] for n in json.load(sys.stdin)))')
  [ "$c" -gt "$connected" ] && connected=$c
  sleep 5
done
c1=$(cpu); d1=$(dbsize); t1=$(date +%s)
el=$((t1 - t0))
timed() { curl -fsS -o /dev/null -w '%{time_total}' -H "Authorization: Bearer bench-admin" "$api$1"; }
t_nodes=$(timed /api/v1/nodes)
t_fleet=$(timed "/api/v1/series?metric=tunnels,upgrades,requests,responses_5xx&from=-6h")
t_node=$(timed "/api/v1/series?metric=tunnels&scope=node:fake-0001&from=-15m&step=30s")

python3 - "$dir/cp.db" "$el" "$c0" "$c1" "$hz" "$d0" "$d1" "$peak" "$NODES" "$SECS" \
  "$connected" "$t_nodes" "$t_fleet" "$t_node" <<'PY'
import sqlite3, sys
db, el, c0, c1, hz, d0, d1, peak, nodes, secs, connected, t_nodes, t_fleet, t_node = sys.argv[1:]
el, hz = int(el), int(hz)
cpu_pct = (int(c1) - int(c0)) / hz / el * 100
growth_h = (int(d1) - int(d0)) / el * 3600
con = sqlite3.connect(db)
rows = dict(con.execute("SELECT tier, COUNT(*) FROM series GROUP BY tier").fetchall())
node_rows = dict(con.execute(
    "SELECT tier, COUNT(*) FROM series WHERE scope >= 'node:' AND scope < 'node;' GROUP BY tier").fetchall())
total = sum(rows.values())
# The history's own bytes: its table and index pages (dbstat), per row.
history_bytes = con.execute(
    "SELECT SUM(pgsize) FROM dbstat WHERE name IN ('series', 'series_by_time')").fetchone()[0]
per_row = history_bytes / max(total, 1)
# Steady state: rows written per hour per tier and scope kind, times each retention.
keep = {0: (6, 1), 1: (7 * 24, 24), 2: (90 * 24, 7 * 24)}  # hours: (others, nodes)
run_h = int(secs) / 3600
steady = 0
for tier, (k_other, k_node) in keep.items():
    step_h = {0: 10 / 3600, 1: 1 / 60, 2: 1 / 6}[tier]
    buckets_run = max(run_h / step_h, 1)
    n = node_rows.get(tier, 0) / buckets_run      # node rows per bucket
    o = (rows.get(tier, 0) - node_rows.get(tier, 0)) / buckets_run
    steady += (n * k_node + o * k_other) / step_h
print(f"| nodes | {nodes} ({connected} connected), stats every 2 s |")
print(f"| run | {secs} s, measured over the last {el} s |")
print(f"| control-plane CPU | {cpu_pct:.1f} % of one core |")
print(f"| control-plane memory (RSS, peak) | {int(peak) / 1024:.0f} MiB |")
print(f"| database growth | {growth_h / 2**20:.1f} MiB per hour (first hours, every tier filling) |")
print(f"| history rows | tier 0: {rows.get(0, 0)} ({node_rows.get(0, 0)} per node), tier 1: {rows.get(1, 0)}, tier 2: {rows.get(2, 0)}; {per_row:.0f} bytes per row with its index |")
print(f"| steady-state history (retention reached) | about {steady * per_row / 2**20:.0f} MiB ({steady / 1e6:.2f} M rows) |")
print(f"| GET /nodes, GET /series (fleet, 6 h, 4 metrics), GET /series (one node, 15 min) | {float(t_nodes) * 1000:.0f} ms, {float(t_fleet) * 1000:.0f} ms, {float(t_node) * 1000:.0f} ms |")
PY
