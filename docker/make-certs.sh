#!/usr/bin/env bash
# Certificates for TLS between machines (docker-compose.tls.yml), made with openssl:
#
#   sudo docker/make-certs.sh [NAME_OR_ADDRESS...]
#
# NAME_OR_ADDRESS: how workers on other machines reach the stack's host (stack.example.org,
# 10.0.0.5); the server's certificate names them, beside postgres, redis, localhost and
# 127.0.0.1, and a worker's sslmode=verify-full checks it. Writes docker/tls/ (ignored by git):
#
#   ca.crt, ca.key          our certificate authority; made once, kept on later runs, so that
#                           workers' copies of ca.crt stay valid. Keep ca.key off other machines.
#   server.crt, server.key  PostgreSQL's and Redis's; the key belongs to uid 999, the user both
#                           run as in their images (official ones and docker/offline-build.sh's).
#   client.crt, client.key  the stack's own gradsweep containers' (uid 10001, see Dockerfile).
#   worker.crt, worker.key  for workers on other machines: copy them there with ca.crt; the key
#                           belongs to the user who ran sudo.
#
# Root is needed to give each key to the user that reads it: PostgreSQL and libpq refuse a key
# that others may read. Run again with other names to issue new certificates from the same CA.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tls"
DAYS="${CERT_DAYS:-825}"

die() { echo "make-certs: $*" >&2; exit 1; }
command -v openssl >/dev/null || die "openssl is not installed (apt-get install openssl)"
[ "$(id -u)" = 0 ] || die "run it as root (sudo): each key is given to the uid of its container's user"

mkdir -p "$DIR"
echo '*' > "$DIR/.gitignore"
umask 077

if [ ! -s "$DIR/ca.key" ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -keyout "$DIR/ca.key" -out "$DIR/ca.crt" -subj "/CN=gradsweep CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

# issue NAME CN OWNER EXTENSIONS: NAME.key (given to OWNER, uid:gid) and NAME.crt signed by the CA.
issue() {
    local name="$1" cn="$2" owner="$3" extensions="$4"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$cn" \
        -keyout "$DIR/$name.key" -out "$DIR/$name.csr" 2>/dev/null
    printf '%s\n' "$extensions" > "$DIR/$name.ext"
    openssl x509 -req -in "$DIR/$name.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial \
        -days "$DAYS" -extfile "$DIR/$name.ext" -out "$DIR/$name.crt" 2>/dev/null
    rm -f "$DIR/$name.csr" "$DIR/$name.ext"
    chown "$owner" "$DIR/$name.key"
    chmod 600 "$DIR/$name.key"
    chmod 644 "$DIR/$name.crt"
}

names="DNS:postgres,DNS:redis,DNS:localhost,IP:127.0.0.1"
for name in "$@"; do
    if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then
        names="$names,IP:$name"
    else
        names="$names,DNS:$name"
    fi
done
issue server gradsweep-server 999:999 "subjectAltName=$names
extendedKeyUsage=serverAuth,clientAuth"
issue client gradsweep 10001:10001 "extendedKeyUsage=clientAuth"
issue worker gradsweep-worker "${SUDO_UID:-0}:${SUDO_GID:-0}" "extendedKeyUsage=clientAuth"
chmod 644 "$DIR/ca.crt" "$DIR/.gitignore"
chmod 755 "$DIR"
echo "make-certs: $DIR: the server's certificate names $names" >&2
