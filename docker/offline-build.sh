#!/usr/bin/env bash
# Prepare `docker compose up --build` for a machine that reaches no container registry, and
# whose containers reach no package index, from what the machine itself can reach: Debian's
# package mirror and PyPI.
#
#   docker/offline-build.sh
#
# 1. Base images. Where python:3.11-slim, redis:7 or postgres:16 is not on this machine, a
#    stand-in is built from Debian's packages (docker/python, docker/redis, docker/postgres) on
#    a Debian base image made with debootstrap (root and the debootstrap package needed, once).
#    The stand-ins are gradsweep-offline/python:3.11 (Debian's Python 3.11), .../redis:7
#    (Redis 7.0) and .../postgres:15 (PostgreSQL 15: Debian stable has no 16).
# 2. The wheelhouse, docker/wheelhouse/: every package the image installs, as wheels, for the
#    Python of the image that is used. pip on this machine resolves for its own Python, whose
#    environment markers may differ (Python 3.11.2 needs async-timeout for redis, 3.11.7 does
#    not), so the image's own pip then checks, with no network, that the wheelhouse holds all
#    it needs, and what it misses is added until nothing is.
# 3. .env: PYTHON_IMAGE, REDIS_IMAGE and POSTGRES_IMAGE, which docker-compose.yml reads, name the
#    images chosen (other lines are left as they are).
#
# Run again after pyproject.toml changes; what is already built is reused.
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), DEBIAN_SUITE (bookworm),
# GRADSWEEP_STANDINS=1 to use the stand-ins even where the official images are present.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE="${DEBIAN_SUITE:-bookworm}"
BASE_IMAGE="gradsweep-offline/debian:$SUITE"
WHEELHOUSE="$ROOT/docker/wheelhouse"
ENV_FILE="$ROOT/.env"

say() { echo "offline-build: $*" >&2; }
die() { say "$*"; exit 1; }
present() { docker image inspect "$1" >/dev/null 2>&1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd)"

base_image() {
    present "$BASE_IMAGE" && return
    command -v debootstrap >/dev/null || die "$BASE_IMAGE is missing and debootstrap is not installed"
    [ "$(id -u)" = 0 ] || die "debootstrap needs root to build $BASE_IMAGE"
    local rootfs
    rootfs="$(mktemp -d)"
    say "debootstrap $SUITE from $MIRROR (about a minute)"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

# The image to use for one service: the official one where it is here, else the stand-in.
choose() {
    local official="$1" standin="$2" folder="$3"
    if present "$official" && [ "${GRADSWEEP_STANDINS:-0}" != 1 ]; then
        echo "$official"
        return
    fi
    base_image
    # Unchanged, this is docker's layer cache and takes a second.
    docker build --quiet --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$standin" "$ROOT/docker/$folder" >/dev/null
    echo "$standin"
}

wheelhouse() {
    local image="$1" missing checked
    mkdir -p "$WHEELHOUSE"
    python3 "$ROOT/docker/requirements.py" "$ROOT/pyproject.toml" monitoring --build > "$WHEELHOUSE/requirements.txt"
    say "wheelhouse: pip wheel on this machine"
    python3 -m pip wheel --quiet --disable-pip-version-check -w "$WHEELHOUSE" -r "$WHEELHOUSE/requirements.txt"
    for _ in $(seq 20); do
        if checked="$(docker run --rm --network none -v "$WHEELHOUSE:/wheels:ro" "$image" \
                pip install --dry-run --quiet --disable-pip-version-check --no-index \
                --find-links=/wheels -r /wheels/requirements.txt 2>&1)"; then
            say "wheelhouse: complete for $image ($(ls "$WHEELHOUSE"/*.whl | wc -l) wheels)"
            return
        fi
        # "No matching distribution found for async-timeout>=4.0.3; python_full_version < ...":
        # the requirement without its marker, which this machine's pip would find false.
        missing="$(sed -n 's/.*No matching distribution found for \([^;]*\).*$/\1/p' <<<"$checked" | head -1)"
        [ -n "$missing" ] || die "the wheelhouse does not install in $image: $checked"
        say "wheelhouse: $image also needs $missing"
        python3 -m pip wheel --quiet --disable-pip-version-check -w "$WHEELHOUSE" "$missing"
    done
    die "the wheelhouse is still incomplete for $image after 20 additions"
}

set_env() {
    touch "$ENV_FILE"
    if grep -q "^$1=" "$ENV_FILE"; then
        sed -i "s|^$1=.*|$1=$2|" "$ENV_FILE"
    else
        echo "$1=$2" >> "$ENV_FILE"
    fi
}

python_image="$(choose python:3.11-slim gradsweep-offline/python:3.11 python)"
redis_image="$(choose redis:7 gradsweep-offline/redis:7 redis)"
postgres_image="$(choose postgres:16 gradsweep-offline/postgres:15 postgres)"
wheelhouse "$python_image"
set_env PYTHON_IMAGE "$python_image"
set_env REDIS_IMAGE "$redis_image"
set_env POSTGRES_IMAGE "$postgres_image"
say "images: $python_image, $redis_image, $postgres_image (in $ENV_FILE); now: docker compose up -d --build"
