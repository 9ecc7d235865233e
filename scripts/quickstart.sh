#!/usr/bin/env bash
# Starts a complete Sluice system on this machine: demo WebSocket/HTTP echo backends, the
# control plane (SQLite in .demo/), one data-plane node, and the demo configuration
# (docs/examples/demo.json: the article's setup without TLS). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --bins --quiet
bin=target/debug
mkdir -p .demo
: > .demo/pids

cleanup() {
  trap - EXIT INT TERM
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < .demo/pids
  wait 2>/dev/null || true
  echo "stopped"
}
trap cleanup EXIT INT TERM

# Tokens for this demo, reused across runs so the database keeps matching them.
if [ ! -f .demo/tokens.env ]; then
  printf 'ADMIN_TOKEN=%s\nNODE_TOKEN=%s\n' \
    "$(head -c 24 /dev/urandom | base64 | tr -d '/+=')" \
    "$(head -c 24 /dev/urandom | base64 | tr -d '/+=')" > .demo/tokens.env
fi
# shellcheck disable=SC1091
. .demo/tokens.env

"$bin/sluice-echo" \
  127.0.0.11:9001=chat-01 127.0.0.12:9001=chat-02 \
  127.0.0.21:9002=notify-01 127.0.0.22:9002=notify-02 \
  127.0.0.31:8080=ws-01 127.0.0.32:8080=ws-02 127.0.0.33:8080=ws-03 \
  127.0.0.41:8080=app-01 127.0.0.42:8080=app-02 127.0.0.43:8080=app-03 \
  > .demo/echo.log 2>&1 &
echo $! >> .demo/pids

"$bin/sluice-cp" --database .demo/sluice.db --admin-token "$ADMIN_TOKEN" --node-token "$NODE_TOKEN" \
  > .demo/cp.log 2>&1 &
echo $! >> .demo/pids

wait_for() { # url, what
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$2 did not start; see .demo/*.log" >&2
  exit 1
}
wait_for http://127.0.0.1:7080/healthz "the control plane"

"$bin/sluice-dp" --control-plane http://127.0.0.1:7081 --token "$NODE_TOKEN" \
  --node-id demo-node-1 --labels zone=local --state-dir .demo/dp-state > .demo/dp.log 2>&1 &
echo $! >> .demo/pids

curl -fsS -X PUT -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
  --data @docs/examples/demo.json http://127.0.0.1:7080/api/v1/config > /dev/null
wait_for http://127.0.0.1:8080/ "the data-plane node"

cat <<TXT

Sluice is running.
  WebSocket chat:          $bin/sluice-wscat ws://127.0.0.1:8080/ws/chat
  WebSocket notifications: $bin/sluice-wscat ws://127.0.0.1:8080/ws/notifications
  Any other WebSocket:     $bin/sluice-wscat ws://127.0.0.1:8080/live   (type "whoami")
  Plain HTTP:              curl -i http://127.0.0.1:8080/hello
  Node metrics:            curl http://127.0.0.1:7082/metrics
  Dashboard:               http://127.0.0.1:7080/#token=$ADMIN_TOKEN
  Drain a server:          curl -X PUT -H "Authorization: Bearer $ADMIN_TOKEN" --data '{"state":"drain"}' http://127.0.0.1:7080/api/v1/backends/ws_backends/servers/ws-01/state
  REST API:                curl -H "Authorization: Bearer $ADMIN_TOKEN" http://127.0.0.1:7080/api/v1/nodes
  OpenAPI:                 curl -H "Authorization: Bearer $ADMIN_TOKEN" http://127.0.0.1:7080/api/v1/openapi.json
  Admin token:             $ADMIN_TOKEN
  Logs:                    .demo/cp.log .demo/dp.log .demo/echo.log

Press Ctrl-C to stop.
TXT
wait
