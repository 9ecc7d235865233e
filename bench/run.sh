#!/usr/bin/env bash
# Benchmarks Sluice side by side with HAProxy (Debian's haproxy 2.6) and a direct
# connection, on this machine, and writes BENCHMARKS.md.
#
#   bench/run.sh                 # every workload, RUNS=3 runs of SECS=5 s each
#   RUNS=1 SECS=2 bench/run.sh   # a quick look
#
# CPU pinning on a 2-core machine: the proxies on core 0, one at work at a time, each with one worker
# thread (HAProxy `nbthread 1`, sluice-dp `--worker-threads 1`); load generator, echo
# backends and the control plane on core 1. Needs: haproxy, taskset, curl.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SECS=${SECS:-5}
# Subsets for a quick look, e.g. TARGETS=sluice WORKLOADS="idle handshake".
# sluice-shared: the node again with `--runtime shared` (traffic workloads only).
# relay (not in the default set): a bare TCP relay on tokio (sluice-bench-relay), the
# plain traffic workloads only — the ceiling for a proxy on that event loop.
# uring-relay (not in the default set): the same relay on io_uring with multishot recv
# into provided buffers (sluice-bench-uring-relay) — what that kernel interface gives.
# uring-hosted (not in the default set): that relay's ring hosted in a tokio runtime, as a
# tokio program would add io_uring (sluice-bench-uring-relay --hosted).
TARGETS=${TARGETS:-direct haproxy sluice sluice-shared}
WORKLOADS=${WORKLOADS:-handshake echo64 echo16k latency chat busylatency h2streams h2echo64 tls13handshake tls12handshake tls12resume tlsecho64 idle tlsidle push}
want() { [[ " $TARGETS " == *" $1 "* && " $WORKLOADS " == *" $2 "* ]]; }
PROXY_CORE=0
LOAD_CORE=1
out=bench/results
tmp=$(mktemp -d)
results=$out/results.jsonl
mkdir -p "$out"
: > "$results"

command -v haproxy >/dev/null || { echo "haproxy not installed (apt-get install haproxy)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

cargo build --release --quiet -p sluice-control-plane -p sluice-data-plane -p sluice-bench -p sluice-bench-uring
B=target/release

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$tmp/haproxy.pid" ] && xargs kill < "$tmp/haproxy.pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

wait_port() { # port
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

load() { # target-name workload run args...
  local target=$1 workload=$2 run=$3
  shift 3
  want "$target" "$workload" || return 0
  local result
  result=$(taskset -c $LOAD_CORE "$B/sluice-bench" "$@")
  printf '{"target":"%s","workload":"%s","run":%s,"result":%s}\n' "$target" "$workload" "$run" "$result" >> "$results"
  echo "  $target $workload run $run done"
}

# The certificate both proxies serve on their TLS bind (ECDSA P-256, bench.local).
"$B/sluice-bench" cert --dir "$tmp"
TLS=(--tls-ca "$tmp/bench.crt")

# Echo backends: two servers in one single-threaded process.
taskset -c $LOAD_CORE "$B/sluice-bench-echo" 127.0.0.1:19001 127.0.0.1:19002 > /dev/null &
BACKEND=$!
pids+=("$BACKEND")
wait_port 19001

# ---- HAProxy ------------------------------------------------------------------------
cat > "$tmp/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 9900
    ssl-default-bind-ciphers ECDHE-ECDSA-AES128-GCM-SHA256
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 3600s
    timeout http-request 10s
    option forwardfor
    option http-server-close

frontend fe
    bind 127.0.0.1:18080
    bind 127.0.0.1:18443 ssl crt $tmp/bench.pem alpn http/1.1 no-tls-tickets
    acl is_websocket hdr(Upgrade) -i websocket
    acl is_ws_connection hdr_sub(Connection) -i upgrade
    use_backend bench if is_websocket is_ws_connection
    default_backend bench

backend bench
    balance roundrobin
    server s1 127.0.0.1:19001
    server s2 127.0.0.1:19002
CFG
sed "s#$tmp/##" "$tmp/haproxy.cfg" > "$out/haproxy.cfg"

# The same with HAProxy's busy polling (workload busylatency).
sed 's/^    nbthread 1$/    nbthread 1\n    busy-polling/' "$tmp/haproxy.cfg" > "$tmp/haproxy-busy.cfg"
start_haproxy() { # [configuration file]
  taskset -c $PROXY_CORE haproxy -f "${1:-$tmp/haproxy.cfg}" -p "$tmp/haproxy.pid" -D
  wait_port 18080
  HAPROXY=$(cat "$tmp/haproxy.pid")
}
stop_haproxy() {
  xargs kill < "$tmp/haproxy.pid" 2>/dev/null || true
  pkill -f -- "-f $tmp/haproxy" 2>/dev/null || true
  for _ in $(seq 1 100); do pgrep -f -- "-f $tmp/haproxy" >/dev/null || break; sleep 0.05; done
}

# ---- Sluice -------------------------------------------------------------------------
TOKEN=bench-admin-token
NODE_TOKEN=bench-node-token
start_cp() { # index: 1 — API 17080, nodes 17081, binds 18081/18444; 2 — 17082, 17083, 18082/18445
  local i=$1
  local api=$((17078 + 2 * i)) nodes=$((17079 + 2 * i)) plain=$((18080 + i)) tls=$((18443 + i))
  rm -f "$tmp/cp$i.db"*
  taskset -c $LOAD_CORE "$B/sluice-cp" --database "$tmp/cp$i.db" --api-listen 127.0.0.1:$api \
    --node-listen 127.0.0.1:$nodes --admin-token $TOKEN --node-token $NODE_TOKEN > /dev/null 2> "$tmp/cp$i.log" &
  pids+=($!)
  [ "$i" = 1 ] && CP=$!
  wait_port $api
  curl -fsS -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    --data @"$tmp/bench-upload.json" http://127.0.0.1:$api/api/v1/certificates > /dev/null
  curl -fsS -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    --data @- http://127.0.0.1:$api/api/v1/config > /dev/null <<JSON
{
  "defaults": { "timeouts": { "connect": "5s", "client": "30s", "server": "30s", "tunnel": "3600s", "http_request": "10s" },
                "forwardfor": true, "http_server_close": true },
  "frontends": [{
    "name": "fe",
    "binds": [
      { "address": "127.0.0.1:$plain" },
      { "address": "127.0.0.1:$tls", "tls": { "certificates": ["bench"], "alpn": ["http/1.1"],
        "ciphers": ["ECDHE-ECDSA-AES128-GCM-SHA256"] } }
    ],
    "acls": [
      { "name": "is_websocket", "expr": "hdr(Upgrade) -i websocket" },
      { "name": "is_ws_connection", "expr": "hdr_sub(Connection) -i upgrade" }
    ],
    "use_backend": [{ "backend": "bench", "if": "is_websocket is_ws_connection" }],
    "default_backend": "bench"
  }],
  "backends": [{ "name": "bench", "balance": "roundrobin", "servers": [
    { "name": "s1", "address": "127.0.0.1:19001" },
    { "name": "s2", "address": "127.0.0.1:19002" }
  ] }]
}
JSON
}
start_node() { # id extra-args... (NODE_CP: the control plane's node port, 17081 unless set)
  local id=$1
  shift
  RUST_LOG=warn taskset -c $PROXY_CORE "$B/sluice-dp" --control-plane "http://127.0.0.1:${NODE_CP:-17081}" \
    --token $NODE_TOKEN --node-id "$id" --worker-threads 1 --admin-listen 127.0.0.1:0 "$@" \
    > /dev/null 2>> "$tmp/dp.log" &
  NODE=$!
  pids+=("$NODE")
}
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

TRAFFIC="handshake echo64 echo16k latency chat tls13handshake tls12handshake tls12resume tlsecho64 h2streams h2echo64"
one_workload() { # run workload name target proxy-pid-or-empty tls-target-or-empty
  local run=$1 wl=$2 name=$3 target=$4 proxy=${5:-} tls=${6:-}
  local p=(--pid "backend=$BACKEND")
  [ -n "$proxy" ] && p+=(--pid "proxy=$proxy")
  case $wl in
    handshake) load "$name" handshake "$run" handshake --target "$target" --seconds "$SECS" --workers 50 "${p[@]}" ;;
    echo64) load "$name" echo64 "$run" echo --target "$target" --seconds "$SECS" --conns 100 --size 64 "${p[@]}" ;;
    echo16k) load "$name" echo16k "$run" echo --target "$target" --seconds "$SECS" --conns 10 --size 16384 "${p[@]}" ;;
    latency) load "$name" latency "$run" latency --target "$target" --seconds "$SECS" --conns 100 --rate 10000 "${p[@]}" ;;
    # A chat fleet's shape: 1,000 tunnels, each sending 10 messages a second.
    chat) load "$name" chat "$run" latency --target "$target" --seconds "$SECS" --conns 1000 --rate 10000 "${p[@]}" ;;
  esac
  # wss: the same certificate and suite on both proxies (the backends speak plain).
  if [ -n "$tls" ]; then
    case $wl in
      tls13handshake) load "$name" tls13handshake "$run" handshake --target "$tls" --tls 1.3 "${TLS[@]}" --seconds "$SECS" --workers 50 "${p[@]}" ;;
      tls12handshake) load "$name" tls12handshake "$run" handshake --target "$tls" --tls 1.2 "${TLS[@]}" --seconds "$SECS" --workers 50 "${p[@]}" ;;
      tls12resume) load "$name" tls12resume "$run" handshake --target "$tls" --tls 1.2 --tls-resume "${TLS[@]}" --seconds "$SECS" --workers 50 "${p[@]}" ;;
      tlsecho64) load "$name" tlsecho64 "$run" echo --target "$tls" --tls 1.3 "${TLS[@]}" --seconds "$SECS" --conns 100 --size 64 "${p[@]}" ;;
    esac
  fi
  # WebSocket over HTTP/2 (RFC 8441, h2c): proxies only, the backends speak HTTP/1.1.
  if [ -n "$proxy" ] && [[ "$name" != *relay && "$name" != uring-* ]]; then
    case $wl in
      h2streams) load "$name" h2streams "$run" h2-streams --target "$target" --seconds "$SECS" --conns 10 --per-conn 5 "${p[@]}" ;;
      h2echo64) load "$name" h2echo64 "$run" h2-echo --target "$target" --seconds "$SECS" --conns 10 --per-conn 10 --size 64 "${p[@]}" ;;
    esac
  fi
  return 0
}

has() { [[ " $TARGETS " == *" $1 "* ]]; }

# The traffic workloads: every target is up at once (each proxy alone on the proxy core
# when it is measured, the others idle), and each workload of each run is measured on
# every target in turn, seconds apart, so that a machine whose speed drifts over minutes
# (a shared VM's does) weighs on all of them alike. The two nodes have a control plane
# each, with the same configuration on ports of their own.
targets=()
has direct && targets+=("direct 127.0.0.1:19001 - -")
if has haproxy; then
  start_haproxy
  targets+=("haproxy 127.0.0.1:18080 $HAPROXY 127.0.0.1:18443")
fi
# A bare relay target: name port command... (pinned like the proxies, to both backends).
relays=()
start_relay() {
  local name=$1 port=$2
  shift 2
  has "$name" || return 0
  taskset -c $PROXY_CORE "$@" 127.0.0.1:$port 127.0.0.1:19001 127.0.0.1:19002 &
  local pid=$!
  relays+=("$pid")
  pids+=("$pid")
  wait_port "$port"
  targets+=("$name 127.0.0.1:$port $pid -")
}
start_relay relay 18090 "$B/sluice-bench-relay"
start_relay uring-relay 18091 "$B/sluice-bench-uring-relay"
start_relay uring-hosted 18092 "$B/sluice-bench-uring-relay" --hosted
{ has sluice || has sluice-shared; } && start_cp 1
if has sluice; then
  start_node bench-1
  wait_port 18081
  wait_port 18444
  SLUICE=$NODE
  targets+=("sluice 127.0.0.1:18081 $NODE 127.0.0.1:18444")
fi
if has sluice-shared; then
  start_cp 2
  NODE_CP=17083 start_node shared-1 --runtime shared
  wait_port 18082
  wait_port 18445
  SHARED=$NODE
  targets+=("sluice-shared 127.0.0.1:18082 $NODE 127.0.0.1:18445")
fi
for run in $(seq 1 "$RUNS"); do
  echo "run $run"
  for wl in $TRAFFIC; do
    for t in "${targets[@]}"; do
      read -r name target proxy tls <<< "$t"
      [ "$proxy" = - ] && proxy=
      [ "$tls" = - ] && tls=
      one_workload "$run" "$wl" "$name" "$target" "$proxy" "$tls"
    done
  done
done
has haproxy && stop_haproxy
for p in "${relays[@]}"; do stop_pid "$p"; done
[ -n "${SLUICE:-}" ] && stop_pid "$SLUICE"
[ -n "${SHARED:-}" ] && stop_pid "$SHARED"

# Latency with both proxies busy polling (HAProxy `busy-polling`, sluice-dp
# `--busy-polling`): a proxy that polls keeps its core busy even when idle, so each is
# measured alone, started for its measurement and stopped after, in turn within a run.
for run in $(seq 1 "$RUNS"); do
  { want haproxy busylatency || want sluice busylatency; } || break
  if want haproxy busylatency; then
    start_haproxy "$tmp/haproxy-busy.cfg"
    load haproxy busylatency "$run" latency --target 127.0.0.1:18080 --seconds "$SECS" --conns 100 --rate 10000 --pid "proxy=$HAPROXY" --pid "backend=$BACKEND"
    stop_haproxy
  fi
  if want sluice busylatency; then
    start_node "busy-$run" --busy-polling
    wait_port 18081
    load sluice busylatency "$run" latency --target 127.0.0.1:18081 --seconds "$SECS" --conns 100 --rate 10000 --pid "proxy=$NODE" --pid "backend=$BACKEND"
    stop_pid "$NODE"
  fi
done

if has haproxy; then
echo "haproxy"
for run in $(seq 1 "$RUNS"); do
  want haproxy idle || break
  start_haproxy
  load haproxy idle "$run" idle --target 127.0.0.1:18080 --steps 1000,9000 --pid "proxy=$HAPROXY"
  stop_haproxy
done
for run in $(seq 1 "$RUNS"); do
  want haproxy tlsidle || break
  start_haproxy
  load haproxy tlsidle "$run" idle --target 127.0.0.1:18443 --tls 1.3 "${TLS[@]}" --steps 1000,9000 --pid "proxy=$HAPROXY"
  stop_haproxy
done
want haproxy push && start_haproxy
load haproxy push 1 reload --target 127.0.0.1:18080 --tunnels 1000 --reloads 10 \
  --cmd "taskset -c $PROXY_CORE haproxy -f $tmp/haproxy.cfg -p $tmp/haproxy.pid -D -sf \$(cat $tmp/haproxy.pid)"
stop_haproxy
fi

if has sluice; then
echo "sluice"
for run in $(seq 1 "$RUNS"); do
  want sluice idle || break
  start_node "idle-$run"
  wait_port 18081
  load sluice idle "$run" idle --target 127.0.0.1:18081 --steps 1000,9000 --pid "proxy=$NODE"
  stop_pid "$NODE"
done
for run in $(seq 1 "$RUNS"); do
  want sluice tlsidle || break
  start_node "tlsidle-$run"
  wait_port 18444
  load sluice tlsidle "$run" idle --target 127.0.0.1:18444 --tls 1.3 "${TLS[@]}" --steps 1000,9000 --pid "proxy=$NODE"
  stop_pid "$NODE"
done
# Push: 20 nodes (sharing the bind through SO_REUSEPORT, so the tunnels spread over
# them), 1,000 tunnels under echo load, 100 changes per run.
push_nodes=()
want sluice push && for i in $(seq 1 20); do
  start_node "push-$i" --reuse-port
  push_nodes+=("$NODE")
done
for run in $(seq 1 "$RUNS"); do
  want sluice push || break
  wait_port 18081
  sleep 1
  load sluice push "$run" push --target 127.0.0.1:18081 --api http://127.0.0.1:17080 --token $TOKEN \
    --tunnels 1000 --changes 100 --backend bench --nodes 20 --pid "cp=$CP"
done
for p in "${push_nodes[@]}"; do stop_pid "$p"; done
fi

# ---- Report -------------------------------------------------------------------------
{
  echo "# Benchmarks"
  echo
  echo "Sluice side by side with HAProxy and a direct connection, in one run of \`bench/run.sh\`"
  echo "(RUNS=$RUNS, SECS=$SECS, TARGETS=\"$TARGETS\"). Figures are the median of the runs with the min–max in"
  echo "parentheses. Generated $(date -u +%Y-%m-%dT%H:%MZ)."
  echo
  echo "## Machine and versions"
  echo
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $(free -g | awk '/Mem:/{print $2}') GiB RAM"
  echo "- Kernel: $(uname -r); open-files limit $(ulimit -n)"
  echo "- $(haproxy -v | head -1)"
  echo "- $(rustc -V); Sluice built with \`cargo build --release\`"
  echo
  echo "## Setup"
  echo
  echo "- Proxies pinned to core $PROXY_CORE with one thread each: HAProxy \`nbthread 1\`; \`sluice-dp --worker-threads 1\` (the default \`--runtime per-core\`: with one worker, a single thread and runtime serving connections and the control stream); \`sluice shared\`: the same node with \`--runtime shared\` (tokio's multi-thread scheduler with one worker)."
  echo "- Load generator (\`sluice-bench\`), echo backends (\`sluice-bench-echo\`, two servers in one single-threaded process) and the control plane on core $LOAD_CORE."
  echo "- Same routing on both proxies: \`mode http\`, the article's upgrade ACLs, \`timeout tunnel 3600s\`, \`option forwardfor\`, round robin over two servers (configuration in \`bench/results/haproxy.cfg\`; Sluice's is applied through the REST API by \`bench/run.sh\`). Neither proxy writes access logs."
  echo "- TLS (\`wss://\`): one self-signed ECDSA P-256 certificate on both proxies' TLS bind (HAProxy with $(haproxy -vv 2>/dev/null | grep -m1 'Running on OpenSSL' | sed 's/.*: //; s/ [0-9]* [A-Z][a-z]* [0-9]*$//'), \`no-tls-tickets\`; Sluice with rustls); the client offers one suite — TLS 1.3 \`TLS_AES_128_GCM_SHA256\`, TLS 1.2 \`ECDHE-ECDSA-AES128-GCM-SHA256\` — and X25519. \`tls12resume\` resumes sessions (the servers' session caches), the other TLS handshakes are full ones. The backends speak plain WebSocket."
  echo "- \`busylatency\`: \`latency\` again with both proxies polling for I/O instead of sleeping between events (HAProxy \`busy-polling\`, \`sluice-dp --busy-polling\`), each started alone for its measurement (a polling proxy keeps its core busy)."
  echo "- \`chat\`: 1,000 tunnels each sending 10 messages a second (10,000 a second in all), paced like \`latency\`."
  echo "- All targets are up at once (the one measured alone at work on core $PROXY_CORE); each workload of each run is measured on every target in turn, seconds apart, so a drift of the machine's speed weighs on all alike. idle, tlsidle and push come after, each with fresh processes."
  has relay && echo "- \`tcp relay\`: \`sluice-bench-relay\`, bytes copied both ways between each connection and a backend (round robin), no HTTP, on one single-threaded tokio runtime pinned like the proxies: the ceiling for a proxy on tokio's event loop."
  has uring-relay && echo "- \`io_uring relay\`: \`sluice-bench-uring-relay\`, the same relay on one io_uring (\`SINGLE_ISSUER\`, \`DEFER_TASKRUN\`): multishot accept, multishot recv into a ring of provided buffers, sends, shutdowns and closes as ring operations, one \`io_uring_enter\` per pass of the loop."
  has uring-hosted && echo "- \`io_uring hosted\`: the same ring hosted in a tokio current-thread runtime (\`--hosted\`): tokio accepts and connects, then hands both sockets to the ring, which tokio's epoll watches through an eventfd registered with it — how a tokio program adds io_uring."
  echo "- CPU % is per process over the measured interval (100 % = one core)."
  echo
  echo "## Results"
} > "$tmp/header.md"
"$B/sluice-bench" report --input "$results" --header "$tmp/header.md" > "$tmp/tables.md"
if [ -f bench/analysis.md ]; then cat "$tmp/tables.md" bench/analysis.md > BENCHMARKS.md; else cp "$tmp/tables.md" BENCHMARKS.md; fi
echo "wrote BENCHMARKS.md"
