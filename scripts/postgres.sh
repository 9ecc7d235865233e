#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests: Debian's postgresql (installed when
# missing), a cluster in a temporary directory, listening on loopback only, trust
# authentication for the `postgres` role. Prints the admin URL; `scripts/postgres.sh
# stop DIR` stops it and removes the directory.
set -euo pipefail
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ "${1:-}" = "stop" ]; then
  dir=$2
  $sudo runuser -u postgres -- "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/pg_ctl" \
    -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
  $sudo rm -rf "$dir"
  exit 0
fi
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
$sudo runuser -u postgres -- "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
$sudo runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/run -c fsync=off -c max_connections=200" start >/dev/null
echo "postgres://postgres@127.0.0.1:$port/postgres $dir"
