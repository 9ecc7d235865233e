#!/usr/bin/env bash
# How long a committed version takes to reach every node: NODES fake nodes
# (sluice-bench-fakenodes, acking every snapshot) on one control plane on SQLite, then
# split over two replicas on one PostgreSQL database (a throwaway server,
# scripts/postgres.sh), WRITES writes made through the first replica's REST API. The
# figure is from the write's REST request to the last node's ack, per write (nodes ack
# before the REST response arrives, which is written once the version is published).
#   NODES=50 WRITES=50 bench/replicas.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-50}
WRITES=${WRITES:-50}
cargo build --release --quiet -p sluice-control-plane -p sluice-bench
bin=target/release
dir=$(mktemp -d)
pids=()
pg=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "$pg" ] || ./scripts/postgres.sh stop "$pg"
  rm -rf "$dir"
}
trap cleanup EXIT

# start_cp NAME DATABASE: a control plane; sets api_NAME and node_NAME.
start_cp() {
  "$bin/sluice-cp" --database "$2" --api-listen 127.0.0.1:0 --node-listen 127.0.0.1:0 \
    --admin-token bench-admin --node-token bench-node --replica-id "$1" \
    > "$dir/$1.out" 2> "$dir/$1.log" &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q "sluice-cp ready" "$dir/$1.out" && break; sleep 0.1; done
  eval "api_$1=$(sed -n 's/.*api=\([^ ]*\).*/\1/p' "$dir/$1.out")"
  eval "node_$1=$(sed -n 's/.*node=\([^ ]*\).*/\1/p' "$dir/$1.out")"
}

# fake ENDPOINT PREFIX COUNT: fake nodes logging their acks.
fake() {
  "$bin/sluice-bench-fakenodes" --control-plane "$1" --token bench-node --nodes "$3" \
    --prefix "$2" --seconds 600 --interval 2s --log-acks > "$dir/acks-$2" 2> "$dir/fake-$2.log" &
  pids+=($!)
}

# measure API LABEL: WRITES writes through API, the response time of each in unix ms.
measure() {
  local api=$1 label=$2
  # Every node connected and on the first version.
  for _ in $(seq 1 200); do
    n=$(curl -fsS -H "Authorization: Bearer bench-admin" "$api/api/v1/nodes" \
      | python3 -c 'import json,sys; print(sum(n["connected"] for n in json.load(sys.stdin)))')
    [ "$n" -ge "$NODES" ] && break
    sleep 0.2
  done
  # Fake nodes start reading their stream up to one stats interval after their hello.
  sleep 3
  : > "$dir/writes-$label"
  for i in $(seq 1 "$WRITES"); do
    body="{\"defaults\":{\"timeouts\":{\"server\":\"$((30 + i))s\"}}}"
    t=$(date +%s%3N)
    resp=$(curl -fsS -X PUT -H "Authorization: Bearer bench-admin" --data "$body" "$api/api/v1/config")
    v=$(echo "$resp" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
    echo "$v $t" >> "$dir/writes-$label"
    sleep 0.3
  done
  sleep 2
  python3 - "$dir" "$label" "$NODES" <<'PY'
import glob, sys
d, label, nodes = sys.argv[1], sys.argv[2], int(sys.argv[3])
acks = {}
for f in glob.glob(f"{d}/acks-*"):
    for line in open(f):
        _, node, v, ms = line.split()
        acks.setdefault(int(v), []).append(int(ms))
lat = []
for line in open(f"{d}/writes-{label}"):
    v, t = map(int, line.split())
    got = acks.get(v, [])
    if len(got) < nodes:
        print(f"{label}: version {v} acked by {len(got)} of {nodes}", file=sys.stderr)
        continue
    lat.append(max(got) - t)
    if max(got) - t > 100:
        spread = sorted(m - t for m in got)
        print(f"{label}: version {v}: first ack {spread[0]} ms, median {spread[len(spread)//2]}, last {spread[-1]}", file=sys.stderr)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"| {label} | {nodes} | {len(lat)} | {q(0.5)} | {q(0.99)} | {lat[-1]} |")
print(f"{label}: every write, ms: {lat}", file=sys.stderr)
PY
}

echo "| setup | nodes | writes | request → last ack p50 (ms) | p99 (ms) | max (ms) |"
echo "|---|---|---|---|---|---|"
start_cp solo "$dir/solo.db"
fake "$node_solo" solo "$NODES"
measure "$api_solo" "one replica, SQLite"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()
rm -f "$dir"/acks-*

read -r url pg < <(./scripts/postgres.sh)
start_cp cpa "$url"
start_cp cpb "$url"
fake "$node_cpa" a "$((NODES / 2))"
fake "$node_cpb" b "$((NODES - NODES / 2))"
measure "$api_cpa" "two replicas, PostgreSQL (writes to one)"
