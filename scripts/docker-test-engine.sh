#!/usr/bin/env bash
# docker-test-engine.sh — a private, throw-away Docker engine for cairn's tests.
#
# Usage:
#   scripts/docker-test-engine.sh start   # install docker.io (and busybox-static) if needed, start
#                                         # dockerd, print `export DOCKER_HOST=...`
#   scripts/docker-test-engine.sh env     # print the `export DOCKER_HOST=...` line for a running engine
#   scripts/docker-test-engine.sh stop    # stop the engine, unmount and delete its state directory
#
# How tests use it:
#   eval "$(scripts/docker-test-engine.sh start)"
#   CAIRN_REQUIRE_DOCKER=1 cargo test --test docker_facade
#   scripts/docker-test-engine.sh stop
#
# The Docker tests run only against the engine DOCKER_HOST names; without one they print a skip
# message and pass, unless CAIRN_REQUIRE_DOCKER=1 makes a missing engine a failure. Tests build
# their images locally (`docker import` of a tar holding Debian's busybox-static binary), because
# no registry is reachable.
#
# Isolation: everything lives under $CAIRN_DOCKER_DIR (default /tmp/cairn-docker): data root,
# exec root (including dockerd's own supervised containerd), pidfile, socket and log. The system
# engine's state (/var/lib/docker, /var/run/docker.sock, /run/containerd) is never used or touched.
# Networking is off (--bridge=none, no iptables, no ip-forward), so containers need
# `--network none`. --experimental is on (unless CAIRN_DOCKER_EXPERIMENTAL=0) so that the
# checkpoint API is available.
#
# Environment:
#   CAIRN_DOCKER_DIR             state directory (default /tmp/cairn-docker)
#   CAIRN_DOCKER_STORAGE_DRIVER  force a storage driver (e.g. vfs) instead of dockerd's choice
#   CAIRN_DOCKER_TIMEOUT         seconds to wait for the engine to answer (default 60)
#   CAIRN_DOCKER_EXPERIMENTAL    0 to start the engine without --experimental (no checkpoint API)
#   CAIRN_DOCKER_TCP_PORT        also listen on tcp://127.0.0.1:<port> (plain, unauthenticated,
#                                loopback only) to test cairn against a "remote" DOCKER_HOST;
#                                `start` and `env` then print that endpoint instead of the socket
set -euo pipefail

STATE_DIR="${CAIRN_DOCKER_DIR:-/tmp/cairn-docker}"
DATA_ROOT="$STATE_DIR/data"
EXEC_ROOT="$STATE_DIR/exec"
PIDFILE="$STATE_DIR/dockerd.pid"
SOCKET="$STATE_DIR/docker.sock"
LOG="$STATE_DIR/dockerd.log"
TIMEOUT="${CAIRN_DOCKER_TIMEOUT:-60}"

die() {
    echo "docker-test-engine: $*" >&2
    exit 1
}

# A typo in CAIRN_DOCKER_DIR must not let `stop` delete or unmount the system's state.
check_state_dir() {
    case "$STATE_DIR" in
        /*) ;;
        *) die "CAIRN_DOCKER_DIR must be an absolute path, got '$STATE_DIR'" ;;
    esac
    local resolved
    resolved="$(realpath -m "$STATE_DIR")"
    case "$resolved" in
        / | /var | /var/lib | /var/lib/docker | /var/lib/docker/* | /run | /var/run | /run/docker* | /var/run/docker* | /run/containerd* | /usr | /usr/* | /etc | /etc/* | /home | /root | /tmp)
            die "refusing to use '$resolved' as a private engine directory" ;;
    esac
    STATE_DIR="$resolved"
    DATA_ROOT="$STATE_DIR/data"
    EXEC_ROOT="$STATE_DIR/exec"
    PIDFILE="$STATE_DIR/dockerd.pid"
    SOCKET="$STATE_DIR/docker.sock"
    LOG="$STATE_DIR/dockerd.log"
}

docker_host() {
    echo "unix://$SOCKET"
}

# The endpoint handed to tests: the TCP one when asked for, so that they go the remote way.
advertised_host() {
    if [ -n "${CAIRN_DOCKER_TCP_PORT:-}" ]; then
        echo "tcp://127.0.0.1:$CAIRN_DOCKER_TCP_PORT"
    else
        docker_host
    fi
}

engine_answers() {
    command -v docker >/dev/null 2>&1 || return 1
    docker -H "$(docker_host)" version >/dev/null 2>&1
}

running_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

ensure_installed() {
    local packages=()
    command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 || packages+=(docker.io)
    # The tests build their images from Debian's static busybox.
    [ -x /bin/busybox ] || packages+=(busybox-static)
    [ "${#packages[@]}" -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "missing ${packages[*]}; installing needs root"
    echo "docker-test-engine: installing ${packages[*]} ..." >&2
    # The package's postinst tries to start the system service; all output goes to stderr so
    # that `eval "$(... start)"` only ever sees the export line.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >&2
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is still not on PATH"
}

print_log_tail() {
    if [ -f "$LOG" ]; then
        echo "---- last lines of $LOG ----" >&2
        tail -n 40 "$LOG" >&2
    fi
}

start_engine() {
    check_state_dir
    if running_pid >/dev/null && engine_answers; then
        docker -H "$(advertised_host)" version >/dev/null 2>&1 ||
            die "an engine already runs in $STATE_DIR but not on $(advertised_host); run '$0 stop' first"
        echo "export DOCKER_HOST=$(advertised_host)"
        return 0
    fi
    ensure_installed
    mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
    rm -f "$SOCKET" "$PIDFILE"

    local args=(
        --data-root "$DATA_ROOT"
        --exec-root "$EXEC_ROOT"
        --pidfile "$PIDFILE"
        --host "$(docker_host)"
        --bridge=none
        --iptables=false
        --ip-forward=false
        --ip-masq=false
    )
    if [ "${CAIRN_DOCKER_EXPERIMENTAL:-1}" != 0 ]; then
        args+=(--experimental)
    fi
    if [ -n "${CAIRN_DOCKER_TCP_PORT:-}" ]; then
        case "$CAIRN_DOCKER_TCP_PORT" in
            *[!0-9]* | '') die "CAIRN_DOCKER_TCP_PORT must be a port number" ;;
        esac
        args+=(--host "tcp://127.0.0.1:$CAIRN_DOCKER_TCP_PORT")
    fi
    if [ -n "${CAIRN_DOCKER_STORAGE_DRIVER:-}" ]; then
        args+=(--storage-driver "$CAIRN_DOCKER_STORAGE_DRIVER")
    fi
    # Without --containerd, dockerd would reuse a system containerd at /run/containerd if one ran;
    # it supervises its own under the exec root only when none is there, so say so if one is.
    if [ -S /run/containerd/containerd.sock ]; then
        echo "docker-test-engine: note: a system containerd runs at /run/containerd; dockerd will use it (containers get namespaced by the private engine)" >&2
    fi

    # setsid detaches the daemon from the caller's session so it survives the calling shell.
    setsid dockerd "${args[@]}" </dev/null >"$LOG" 2>&1 &
    local launcher=$!

    local waited=0
    until engine_answers; do
        if ! kill -0 "$launcher" 2>/dev/null && ! running_pid >/dev/null; then
            echo "docker-test-engine: dockerd exited during start-up" >&2
            print_log_tail
            exit 1
        fi
        if [ "$waited" -ge "$TIMEOUT" ]; then
            echo "docker-test-engine: dockerd did not answer on $(docker_host) within ${TIMEOUT}s" >&2
            print_log_tail
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    if [ -n "${CAIRN_DOCKER_TCP_PORT:-}" ] && ! docker -H "$(advertised_host)" version >/dev/null 2>&1; then
        echo "docker-test-engine: the engine answers on its socket but not on $(advertised_host)" >&2
        print_log_tail
        exit 1
    fi
    echo "docker-test-engine: engine ready at $(advertised_host) (log: $LOG)" >&2
    echo "export DOCKER_HOST=$(advertised_host)"
}

# Unmount deepest paths first so that nested mounts (overlay upper dirs, shm, netns) come off.
unmount_under() {
    local root="$1"
    local mounts
    mounts="$(awk -v root="$root" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/self/mounts | sort -r)"
    local mountpoint
    for mountpoint in $mounts; do
        umount "$mountpoint" 2>/dev/null || umount -l "$mountpoint" 2>/dev/null || true
    done
}

wait_for_exit() {
    local pid="$1" seconds="$2"
    local waited=0
    while kill -0 "$pid" 2>/dev/null; do
        [ "$waited" -ge "$((seconds * 10))" ] && return 1
        sleep 0.1
        waited=$((waited + 1))
    done
}

stop_engine() {
    check_state_dir
    [ -d "$STATE_DIR" ] || return 0
    local pid
    if pid="$(running_pid)"; then
        # SIGTERM lets dockerd stop its containers and its supervised containerd cleanly.
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_for_exit "$pid" 30; then
            echo "docker-test-engine: dockerd $pid did not stop in 30 s, killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            wait_for_exit "$pid" 10 || true
        fi
    fi
    # A killed dockerd can leave its containerd and shims behind: end those by the pidfile they
    # keep under our exec root, never by name.
    local leftover
    for leftover in $(find "$EXEC_ROOT" -name '*.pid' 2>/dev/null); do
        pid="$(cat "$leftover" 2>/dev/null || true)"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait_for_exit "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    # containerd shims have no pidfile of their own; they name our private containerd socket on
    # their command line, which is what identifies them (and only them).
    local proc cmdline
    for proc in /proc/[0-9]*; do
        cmdline="$({ tr '\0' ' ' <"$proc/cmdline"; } 2>/dev/null || true)"
        case "$cmdline" in
            *"-address $EXEC_ROOT/containerd/"*)
                pid="${proc#/proc/}"
                kill -TERM "$pid" 2>/dev/null || true
                wait_for_exit "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
                ;;
        esac
    done
    unmount_under "$STATE_DIR"
    rm -rf "$STATE_DIR"
    echo "docker-test-engine: stopped and removed $STATE_DIR" >&2
}

print_env() {
    check_state_dir
    running_pid >/dev/null && engine_answers || die "no private engine answers at $(docker_host); run '$0 start'"
    echo "export DOCKER_HOST=$(advertised_host)"
}

case "${1:-}" in
    start) start_engine ;;
    stop) stop_engine ;;
    env) print_env ;;
    *)
        echo "usage: $0 start|stop|env" >&2
        exit 2
        ;;
esac
