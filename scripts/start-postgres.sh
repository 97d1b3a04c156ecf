#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server on a free loopback port and prints its URL on stdout.
#   scripts/start-postgres.sh DIR     data and socket in DIR (created); stop with: pg_ctl -D DIR/data -m fast stop
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` system user (created if missing).
# fsync is off: this server is for tests and benchmarks, never for data anyone keeps.
set -euo pipefail

dir="${1:?usage: start-postgres.sh DIR}"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
    echo "start-postgres: no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)" >&2
    exit 1
fi

as_server_user=()
if [[ "$(id -u)" == 0 ]]; then
    id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    as_server_user=(runuser -u postgres --)
fi

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
if [[ "$(id -u)" == 0 ]]; then
    chown postgres "$dir"
fi
if [[ ! -f "$dir/data/PG_VERSION" ]]; then
    "${as_server_user[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
fi

for _ in 1 2 3 4 5; do
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    # A port taken between the probe and the start fails the start: try another.
    if "${as_server_user[@]}" "$bin/pg_ctl" -D "$dir/data" -w -l "$dir/server.log" \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >/dev/null; then
        echo "postgres://postgres@127.0.0.1:$port/postgres"
        exit 0
    fi
done
cat "$dir/server.log" >&2
exit 1
