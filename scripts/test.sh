#!/usr/bin/env bash
# The whole test suite: unit, integration (real binary), property and Docker tests.
#
# Docker tests need an engine. When DOCKER_HOST is not set, this script starts a private one
# (scripts/docker-test-engine.sh: its own data root and socket, never the system's) and stops
# it afterwards. Set CAIRN_REQUIRE_DOCKER=1 to make Docker tests fail instead of skip when no
# engine can be reached (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."

engine_started=0
cleanup() {
    if [ "$engine_started" = 1 ]; then
        scripts/docker-test-engine.sh stop || true
    fi
}
trap cleanup EXIT

if [ -z "${DOCKER_HOST:-}" ] && [ -x scripts/docker-test-engine.sh ] && [ "${CAIRN_SKIP_DOCKER:-0}" != 1 ]; then
    if out=$(scripts/docker-test-engine.sh start); then
        eval "$out"
        engine_started=1
    elif [ "${CAIRN_REQUIRE_DOCKER:-0}" = 1 ]; then
        echo "cannot start a private Docker engine and CAIRN_REQUIRE_DOCKER=1" >&2
        exit 1
    else
        echo "note: no Docker engine; Docker tests will skip" >&2
    fi
fi

if cargo nextest --version >/dev/null 2>&1; then
    # Doc tests first (nextest does not run them), so the run ends with nextest's summary.
    cargo test --doc --quiet
    cargo nextest run --no-fail-fast "$@"
else
    cargo test --no-fail-fast "$@"
fi
