#!/usr/bin/env bash
# A private PostgreSQL server for the integration tests (hother.cancelable.integrations.sqlalchemy).
#
#   scripts/postgres.sh [start] [DIR]   create (once) and start a cluster in DIR (default
#                                       build/postgres), listening on 127.0.0.1 on a free port;
#                                       print its DSN (postgresql://postgres@127.0.0.1:PORT/postgres)
#   scripts/postgres.sh dsn [DIR]       print the DSN of the running cluster (exit 1 if not running)
#   scripts/postgres.sh stop [DIR]      stop the cluster (the data directory is kept)
#   scripts/postgres.sh destroy [DIR]   stop the cluster and delete DIR
#
# Debian's `postgresql` package is installed with apt-get when no server binaries are found
# (needs root). The server runs as the `postgres` user when started by root (initdb refuses
# root), as the calling user otherwise. Authentication is `trust`, on 127.0.0.1 only; durability
# is off (fsync=off): this is a throw-away test server. Only progress messages go to stderr;
# stdout carries the DSN alone.
set -euo pipefail
# The server is not our code: never run it under a sanitizer runtime preloaded for pytest.
unset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CMD="${1:-start}"
case "$CMD" in
    start | dsn | stop | destroy) [[ $# -gt 0 ]] && shift ;;
    -h | --help)
        sed -n '2,15p' "$0"
        exit 0
        ;;
    *)
        echo "postgres.sh: unknown command '$CMD' (use start, dsn, stop or destroy)" >&2
        exit 2
        ;;
esac
DIR="${1:-$REPO/build/postgres}"
mkdir -p "$(dirname "$DIR")"
DIR="$(cd "$(dirname "$DIR")" && pwd)/$(basename "$DIR")"
DATA="$DIR/data"

log() { echo "postgres.sh: $*" >&2; }

find_bindir() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
        echo "$d"
        return 0
    fi
    if [[ -x "$(command -v pg_ctl 2>/dev/null || true)" && -x "$(command -v initdb 2>/dev/null || true)" ]]; then
        dirname "$(command -v pg_ctl)"
        return 0
    fi
    return 1
}

BINDIR="$(find_bindir || true)"
if [[ -z "$BINDIR" ]]; then
    if [[ "$CMD" != start ]]; then
        log "no PostgreSQL server binaries found"
        exit 1
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        log "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"
        exit 1
    fi
    log "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends postgresql >&2; then
        apt-get update -q >&2
        apt-get install -y -q --no-install-recommends postgresql >&2
    fi
    BINDIR="$(find_bindir)" || { log "postgresql installed but no server binaries found"; exit 1; }
fi

# Run a command as the cluster owner.
if [[ "$(id -u)" -eq 0 ]]; then
    OWNER=postgres
    id -u "$OWNER" >/dev/null 2>&1 || { log "user 'postgres' is missing"; exit 1; }
    as_owner() { runuser -u "$OWNER" -- "$@"; }
else
    OWNER="$(id -un)"
    as_owner() { "$@"; }
fi

running() {
    [[ -f "$DATA/postmaster.pid" ]] && as_owner "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

print_dsn() {
    echo "postgresql://postgres@127.0.0.1:$(cat "$DIR/port")/postgres"
}

free_port() {
    local py
    py="$(command -v python3 || command -v python)"
    "$py" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

case "$CMD" in
    dsn)
        running || { log "no cluster running in $DIR"; exit 1; }
        print_dsn
        exit 0
        ;;
    stop | destroy)
        if running; then
            as_owner "$BINDIR/pg_ctl" -D "$DATA" -m fast -w stop >&2
        fi
        if [[ "$CMD" == destroy ]]; then
            rm -rf "$DIR"
        fi
        exit 0
        ;;
esac

# start
if running; then
    print_dsn
    exit 0
fi
mkdir -p "$DIR"
if [[ "$(id -u)" -eq 0 ]]; then
    chown "$OWNER" "$DIR"
fi
if [[ ! -f "$DATA/PG_VERSION" ]]; then
    log "initdb in $DATA"
    rm -rf "$DATA"
    as_owner "$BINDIR/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --no-sync >"$DIR/initdb.log" 2>&1 ||
        { cat "$DIR/initdb.log" >&2; exit 1; }
fi
rm -f "$DATA/postmaster.pid"
for attempt in 1 2 3; do
    port="$(free_port)"
    if as_owner "$BINDIR/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 30 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $DIR -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c max_connections=50" >&2; then
        echo "$port" >"$DIR/port"
        chmod a+r "$DIR/port"
        print_dsn
        exit 0
    fi
    log "start on port $port failed (attempt $attempt)"
done
tail -n 20 "$DIR/server.log" >&2 || true
exit 1
