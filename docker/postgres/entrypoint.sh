#!/bin/sh
# Runs as the postgres user (the image's USER). First start: create the cluster in $PGDATA with
# $POSTGRES_USER as its superuser (password $POSTGRES_PASSWORD) and the database $POSTGRES_DB,
# then run the scripts in /docker-entrypoint-initdb.d on a server that listens on its socket
# only, as the official image does; then run the command (postgres) on every address of the
# container. A first start that fails leaves $PGDATA empty, so that the next start begins again
# rather than running a database whose setup (the application's role) was never finished.
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"

initialise() {
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres-entrypoint: POSTGRES_PASSWORD must be set" >&2
        exit 1
    fi
    password_file="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
    initdb --username="$POSTGRES_USER" --pwfile="$password_file" --encoding=UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl --wait --silent -o "-c listen_addresses=''" start
    if [ "$POSTGRES_DB" != postgres ]; then
        createdb --username="$POSTGRES_USER" --maintenance-db=postgres "$POSTGRES_DB"
    fi
    for script in /docker-entrypoint-initdb.d/*.sh; do
        [ -e "$script" ] || continue
        echo "postgres-entrypoint: running $script"
        sh "$script"
    done
    pg_ctl --wait --silent --mode=fast stop
}

# In a process of its own: `set -e` holds there, where it would not under `if !`.
if [ "${1:-}" = --initialise ]; then
    initialise
    exit 0
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if ! "$0" --initialise; then
        pg_ctl --wait --silent --mode=immediate stop 2>/dev/null || true
        find "$PGDATA" -mindepth 1 -delete
        echo "postgres-entrypoint: the first start failed; $PGDATA is left empty" >&2
        exit 1
    fi
fi
if [ "${1:-}" = postgres ]; then
    shift
    exec postgres -c listen_addresses='*' "$@"
fi
exec "$@"
