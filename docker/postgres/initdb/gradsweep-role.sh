#!/bin/sh
# Run once, when the database is created (by the official image's entrypoint or ours, from
# /docker-entrypoint-initdb.d): the role gradsweep, which the application connects as, owns the
# database $POSTGRES_DB and can do nothing else; a leaked application password then reaches
# the application's tables, not the server (no CREATE ROLE, no COPY ... TO PROGRAM). The
# superuser $POSTGRES_USER may log in on the container's socket only, never over the network.
set -eu
if [ -z "${APP_ROLE_PASSWORD:-}" ]; then
    echo "gradsweep-role: APP_ROLE_PASSWORD must be set" >&2
    exit 1
fi
psql --quiet -v ON_ERROR_STOP=1 --username="$POSTGRES_USER" --dbname="$POSTGRES_DB" \
    -v password="$APP_ROLE_PASSWORD" -v database="$POSTGRES_DB" <<'SQL'
CREATE ROLE gradsweep LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'password';
ALTER DATABASE :"database" OWNER TO gradsweep;
-- PostgreSQL 15 and later: the public schema belongs to the database's owner. Older: give it.
ALTER SCHEMA public OWNER TO gradsweep;
REVOKE ALL ON DATABASE postgres, template1 FROM PUBLIC;
SQL
# First match wins: this line goes before the image's "host all all all ...".
hba="$PGDATA/pg_hba.conf"
{ echo "host all $POSTGRES_USER all reject"; cat "$hba"; } > "$hba.new"
mv "$hba.new" "$hba"
