#!/usr/bin/env bash
# Start a local PostgreSQL server for the test suite and print its SQLAlchemy URL.
#
# Uses Debian's postgresql-common tooling (pg_lsclusters / pg_createcluster /
# pg_ctlcluster), so it works without systemd. Idempotent: an existing cluster,
# a running server, an existing role or database are all fine.
#
# stdout: exactly one line, the URL (postgresql+psycopg://USER:PASSWORD@127.0.0.1:PORT/DB)
# stderr: progress messages
#
# Overrides: CANDOR_PG_USER, CANDOR_PG_PASSWORD, CANDOR_PG_DB, CANDOR_PG_VERSION, CANDOR_PG_CLUSTER.
# The password is put into the URL as is: keep it URL-safe.
set -euo pipefail

PG_USER="${CANDOR_PG_USER:-candor}"
PG_PASSWORD="${CANDOR_PG_PASSWORD:-candor}"
PG_DB="${CANDOR_PG_DB:-candor_test}"
PG_CLUSTER="${CANDOR_PG_CLUSTER:-main}"
PG_HOST=127.0.0.1

log() { printf 'start-postgres: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Run a command as the postgres OS user (peer authentication over the unix socket).
as_postgres() {
  if [ "$(id -un)" = postgres ]; then
    (cd / && "$@")
  elif [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && sudo -n -u postgres -- "$@")
  fi
}

command -v pg_lsclusters >/dev/null 2>&1 \
  || die "PostgreSQL is not installed (run: apt-get install -y postgresql)"

PG_VERSION="${CANDOR_PG_VERSION:-}"
if [ -z "$PG_VERSION" ]; then
  # Newest server version installed under /usr/lib/postgresql (15 on Debian 12).
  PG_VERSION="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -n | tail -n 1)"
fi
[ -n "$PG_VERSION" ] && [ -x "/usr/lib/postgresql/$PG_VERSION/bin/postgres" ] \
  || die "no PostgreSQL server binaries found under /usr/lib/postgresql"

cluster_field() { # $1 = awk field number of `pg_lsclusters -h` for our cluster
  pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" -v f="$1" '$1 == v && $2 == c { print $f; exit }'
}

if [ -z "$(cluster_field 2)" ]; then
  log "creating cluster $PG_VERSION/$PG_CLUSTER"
  pg_createcluster "$PG_VERSION" "$PG_CLUSTER" >&2
fi

PG_PORT="$(cluster_field 3)"
case "$(cluster_field 4)" in
  online*)
    log "cluster $PG_VERSION/$PG_CLUSTER already running on port $PG_PORT" ;;
  *)
    log "starting cluster $PG_VERSION/$PG_CLUSTER on port $PG_PORT"
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start >&2 ;;
esac

for _ in $(seq 1 60); do
  if pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then break; fi
  sleep 0.5
done
pg_isready -q -h "$PG_HOST" -p "$PG_PORT" || die "server on $PG_HOST:$PG_PORT did not become ready"

log "ensuring role '$PG_USER' and database '$PG_DB'"
as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres \
  -v user="$PG_USER" -v pw="$PG_PASSWORD" -v db="$PG_DB" >&2 <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN CREATEDB PASSWORD %L', :'user', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL

# Check password login over TCP, the way the tests will connect.
PGPASSWORD="$PG_PASSWORD" psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" \
  -U "$PG_USER" -d "$PG_DB" -tAc 'SELECT 1' >/dev/null \
  || die "cannot log in as $PG_USER to $PG_DB on $PG_HOST:$PG_PORT"

log "ready"
printf 'postgresql+psycopg://%s:%s@%s:%s/%s\n' "$PG_USER" "$PG_PASSWORD" "$PG_HOST" "$PG_PORT" "$PG_DB"
