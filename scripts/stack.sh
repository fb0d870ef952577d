#!/usr/bin/env bash
# The compose stack without Docker: the commands that docker-compose.yml's migrate, api and
# worker services run, read from that file, started as local processes against a PostgreSQL
# and a Redis that are already running (this machine's, by default).
#
#   scripts/stack.sh up       migrate, then start the API and the workers; return once all are ready
#   scripts/stack.sh down     stop every process that `up` started (TERM, then KILL), and wait for them
#   scripts/stack.sh status   the recorded processes, and whether they still run
#
# Configuration, from the environment only:
#   GRADSWEEP_DATABASE_URL   default postgresql://postgres@127.0.0.1:5432/gradsweep (the database must exist)
#   GRADSWEEP_BROKER_URL     default redis://127.0.0.1:6379/0
#   GRADSWEEP_API_URL        default http://127.0.0.1:8000: the API listens on its host and port
#   GRADSWEEP_* that a service sets in the compose file (GRADSWEEP_WORKER_CONCURRENCY, GRADSWEEP_API_TOKEN,
#                            ...): a value set here wins; otherwise the file's value, its ${VAR:-default}s
#                            expanded from this environment, as docker compose would
#   GRADSWEEP_STACK_DIR      where PIDs and logs go (default .stack)
#   GRADSWEEP_STACK_WORKERS  how many workers (default 3), as `docker compose up --scale worker=3`
#   GRADSWEEP_STACK_TIMEOUT  seconds to wait for the stack to be ready (default 60)
#   GRADSWEEP_STACK_STOP_TIMEOUT  seconds between SIGTERM and SIGKILL (default 30, the compose file's
#                            stop_grace_period for workers: running runs finish or are delivered again)
#   GRADSWEEP_COMPOSE_FILE   default: docker-compose.yml at the root of this repository
# `gradsweep`, and a `python3` that can import yaml, must be on PATH (an activated venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE="${GRADSWEEP_COMPOSE_FILE:-$ROOT/docker-compose.yml}"
STATE_DIR="${GRADSWEEP_STACK_DIR:-.stack}"
WORKERS="${GRADSWEEP_STACK_WORKERS:-3}"
TIMEOUT="${GRADSWEEP_STACK_TIMEOUT:-60}"
STOP_TIMEOUT="${GRADSWEEP_STACK_STOP_TIMEOUT:-30}"
export GRADSWEEP_DATABASE_URL="${GRADSWEEP_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/gradsweep}"
export GRADSWEEP_BROKER_URL="${GRADSWEEP_BROKER_URL:-redis://127.0.0.1:6379/0}"
export GRADSWEEP_API_URL="${GRADSWEEP_API_URL:-http://127.0.0.1:8000}"
PIDS="$STATE_DIR/pids"  # one line per process: name, then its process group id (= its pid, by setsid)

say() { echo "stack: $*" >&2; }
die() { say "$*"; exit 1; }

# The service's command and environment, from the compose file: NAME=value records, an
# empty record, then the command's arguments, each ended by a NUL.
read_service() {
    python3 - "$COMPOSE_FILE" "$1" <<'PY'
import os, re, shlex, sys
import yaml

path, name = sys.argv[1:]
with open(path) as file:
    service = yaml.safe_load(file)["services"][name]

# Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, $VAR and $$.
pattern = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?-)([^}]*))?\}|(\w+))")

def expand(match):
    dollar, braced, operator, default, bare = match.groups()
    if dollar:
        return "$"
    value = os.environ.get(braced or bare)
    if operator == ":-" and not value or operator == "-" and value is None:
        return default
    return value or ""

environment = service.get("environment") or {}
if isinstance(environment, list):
    environment = dict(item.partition("=")[::2] for item in environment)
for key, value in environment.items():
    local = os.environ.get(key)
    if local is None and value is None:
        continue  # passed through from the environment, where it is unset
    value = local if local is not None else pattern.sub(expand, str(value))
    sys.stdout.write(f"{key}={value}\0")
sys.stdout.write("\0")
command = service["command"]
for argument in shlex.split(command) if isinstance(command, str) else command:
    sys.stdout.write(pattern.sub(expand, str(argument)) + "\0")
PY
}

# Sets ENV and ARGV for a service, with `--option value` pairs replaced (or added).
load_service() {
    local service="$1" record in_command=0
    shift
    ENV=() ARGV=()
    while IFS= read -r -d '' record; do
        if ((in_command)); then
            ARGV+=("$record")
        elif [[ -z "$record" ]]; then
            in_command=1
        else
            ENV+=("$record")
        fi
    done < <(read_service "$service")
    ((${#ARGV[@]})) || die "no command for service '$service' in $COMPOSE_FILE"
    while (($#)); do
        set_option "$1" "$2"
        shift 2
    done
}

set_option() {
    local i
    for i in "${!ARGV[@]}"; do
        if [[ "${ARGV[i]}" == "$1" ]]; then
            ARGV[i + 1]="$2"
            return
        elif [[ "${ARGV[i]}" == "$1="* ]]; then
            ARGV[i]="$1=$2"
            return
        fi
    done
    ARGV+=("$1" "$2")
}

# Starts ARGV with ENV in a session (so a process group) of its own, in the background.
start() {
    local name="$1" pid
    (cd "$STATE_DIR" && exec env "${ENV[@]}" setsid "${ARGV[@]}") >"$STATE_DIR/$name.log" 2>&1 </dev/null &
    pid=$!
    echo "$name $pid" >>"$PIDS"
    say "started $name (pid $pid): ${ARGV[*]}"
}

# Processes of the group that have not exited (a zombie has: only its parent has yet to reap it).
running_in_group() {
    ps -e -o pgid=,pid=,stat= | awk -v group="$1" '$1 == group && $3 !~ /^Z/ { print $2 }'
}

alive() { [[ -n "$(running_in_group "$1")" ]]; }

fail_up() {
    say "$1"
    [[ -f "$STATE_DIR/$2.log" ]] && tail -n 30 "$STATE_DIR/$2.log" >&2
    stop_all
    exit 1
}

wait_until() {
    local what="$1" name="$2" pid="$3" deadline=$((SECONDS + TIMEOUT))
    shift 3
    until "$@"; do
        alive "$pid" || fail_up "$name exited before it was $what; the end of its log:" "$name"
        ((SECONDS < deadline)) || fail_up "$name not $what after ${TIMEOUT}s; the end of its log:" "$name"
        sleep 0.2
    done
}

api_healthy() {
    python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/healthz', timeout=3)" \
        "$GRADSWEEP_API_URL" 2>/dev/null
}

# Celery logs "<hostname> ready." once the worker consumes from the queue.
worker_ready() { grep -q " ready\.\$" "$STATE_DIR/$1.log"; }

up() {
    command -v gradsweep >/dev/null || die "gradsweep is not on PATH: activate the venv it is installed in"
    mkdir -p "$STATE_DIR"
    STATE_DIR="$(cd "$STATE_DIR" && pwd)"
    PIDS="$STATE_DIR/pids"
    if [[ -s "$PIDS" ]]; then
        die "$PIDS exists: the stack is up, or was not brought down; run '$0 down' first"
    fi
    [[ "$GRADSWEEP_API_URL" =~ ^https?://([^/:]+)(:([0-9]+))? ]] ||
        die "cannot read a host and port in GRADSWEEP_API_URL=$GRADSWEEP_API_URL"
    local host="${BASH_REMATCH[1]}" port="${BASH_REMATCH[3]:-80}" i pid
    : >"$PIDS"

    load_service migrate
    say "migrating: ${ARGV[*]}"
    (cd "$STATE_DIR" && env "${ENV[@]}" "${ARGV[@]}") >"$STATE_DIR/migrate.log" 2>&1 </dev/null ||
        fail_up "migration failed (does the database exist? createdb it); its log:" migrate

    # The compose file's API listens on 0.0.0.0 inside its container; here, on GRADSWEEP_API_URL's address.
    load_service api --host "$host" --port "$port"
    start api
    load_service worker
    for ((i = 1; i <= WORKERS; i++)); do
        start "worker-$i"
    done

    while read -r name pid; do
        if [[ "$name" == api ]]; then
            wait_until healthy api "$pid" api_healthy
        else
            wait_until ready "$name" "$pid" worker_ready "$name"
        fi
    done <"$PIDS"
    say "up: API at $GRADSWEEP_API_URL, $WORKERS workers; logs in $STATE_DIR"
}

stop_all() {
    [[ -f "$PIDS" ]] || return 0
    signal_all TERM
    if ! wait_stopped "$STOP_TIMEOUT"; then
        say "still running ${STOP_TIMEOUT}s after SIGTERM:$LEFT; sending SIGKILL"
        signal_all KILL
        wait_stopped 10 || die "still running after SIGKILL:$LEFT"
    fi
    rm -f "$PIDS"
}

signal_all() {
    local name pid
    while read -r name pid; do
        kill "-$1" -- "-$pid" 2>/dev/null || true
    done <"$PIDS"
}

# Waits up to $1 seconds for every recorded group to be gone; LEFT names those that are not.
wait_stopped() {
    local deadline=$((SECONDS + $1)) name pid
    while :; do
        LEFT=""
        while read -r name pid; do
            if alive "$pid"; then LEFT+=" $name"; fi
        done <"$PIDS"
        [[ -z "$LEFT" ]] && return 0
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

down() {
    [[ -f "$PIDS" ]] || { say "nothing to stop: no $PIDS"; return 0; }
    stop_all
    say "down: every process stopped"
}

status() {
    [[ -f "$PIDS" ]] || { say "down: no $PIDS"; return 0; }
    local name pid
    while read -r name pid; do
        if alive "$pid"; then echo "$name $pid running"; else echo "$name $pid exited"; fi
    done <"$PIDS"
}

case "${1:-}" in
    up | down | status) "$1" ;;
    *) die "usage: $0 up|down|status" ;;
esac
