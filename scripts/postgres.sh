#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests: Debian's postgresql (installed when
# missing), a cluster in a temporary directory, listening on loopback only, trust
# authentication for the `postgres` role. Prints the admin URL and the directory;
# `scripts/postgres.sh stop DIR` stops it and removes the directory, `pause DIR` and
# `resume DIR` stop and start it (an outage, for a test).
set -euo pipefail
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
# As the postgres user, from a directory it may enter.
as_pg() { (cd / && $sudo runuser -u postgres -- "$@"); }
pg_ctl() { as_pg "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/pg_ctl" "$@"; }
start() { # DIR PORT
  pg_ctl -D "$1/data" -l "$1/data/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $2 -k $1/run -c fsync=off -c max_connections=200" start >/dev/null
}
case "${1:-}" in
  stop) pg_ctl -D "$2/data" -m fast stop >/dev/null 2>&1 || true; $sudo rm -rf "$2"; exit 0 ;;
  # An outage for a test: the server stops (and later starts again on its port); the
  # data stays.
  pause) pg_ctl -D "$2/data" -m fast stop >/dev/null; exit 0 ;;
  resume) start "$2" "$(cat "$2/port")"; exit 0 ;;
esac
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "installing postgresql for the store tests" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
  # The package starts a cluster of its own on 5432; the tests use their own.
  $sudo service postgresql stop >/dev/null 2>&1 || true
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
dir=$(mktemp -d /tmp/sluice-pg.XXXXXX)
chmod 755 "$dir"
mkdir "$dir/data" "$dir/run"
$sudo chown -R postgres "$dir/data" "$dir/run"
port=${SLUICE_PG_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
as_pg "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
echo "$port" > "$dir/port"
start "$dir" "$port"
echo "postgres://postgres@127.0.0.1:$port/postgres $dir"
