#!/usr/bin/env bash
# Make sure a Docker engine that can run BuildKit builds answers on this machine.
#
# Idempotent: when `docker info` already answers (and the tools asked for are installed) it
# changes nothing. Otherwise it installs Debian's engine (docker.io, 20.10) plus debootstrap and
# Debian's archive keyring (for offline base images), and with --arm64 also qemu-user-static + binfmt-support (to run
# arm64 containers and debootstrap's second stage emulated), with --registry also
# docker-registry + skopeo (a local image registry for the tests, and a second tool to read it;
# the registry's system service is never started: tests run its binary themselves), then starts
# dockerd in the background and waits until it answers.
#
# Why: no engine runs when a machine (developer or CI) starts, and nothing a previous session
# started survives, so .ci/run and users call this first.
#
# stdout carries exactly one line, for `eval "$(scripts/docker-engine.sh)"`:
#     BUILDKIT_DOCKER=/usr/bin/docker
# naming the docker client to run as `DOCKER_BUILDKIT=1 "$BUILDKIT_DOCKER" build ...`. The
# newer client first on PATH (28.x, no buildx plugin) refuses BuildKit; Debian's 20.10 client
# has BuildKit built in. Progress and errors go to stderr.
#
# Environment:
#     DOCKERD_LOG              dockerd's log file     (default /var/log/dockerd.log)
#     DOCKER_ENGINE_TIMEOUT    seconds to wait for the engine (default 90)
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/docker-engine.sh [--arm64] [--registry] [--timeout SECONDS] [--log FILE]

Ensure a Docker engine with BuildKit support answers; print BUILDKIT_DOCKER=<client> on stdout.
  --arm64            also install qemu-user-static + binfmt-support (arm64 emulation)
  --registry         also install docker-registry (binary only, its service stays off) + skopeo
  --timeout SECONDS  how long to wait for dockerd (default: $DOCKER_ENGINE_TIMEOUT or 90)
  --log FILE         dockerd log file (default: $DOCKERD_LOG or /var/log/dockerd.log)
EOF
}

ARM64=0
REGISTRY=0
TIMEOUT="${DOCKER_ENGINE_TIMEOUT:-90}"
LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
while [ $# -gt 0 ]; do
    case "$1" in
        --arm64) ARM64=1 ;;
        --registry) REGISTRY=1 ;;
        --timeout) TIMEOUT="${2:?--timeout needs a value}"; shift ;;
        --timeout=*) TIMEOUT="${1#*=}" ;;
        --log) LOG="${2:?--log needs a value}"; shift ;;
        --log=*) LOG="${1#*=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "docker-engine: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
case "$TIMEOUT" in
    ''|*[!0-9]*) echo "docker-engine: --timeout must be a whole number of seconds" >&2; exit 2 ;;
esac

log() { echo "docker-engine: $*" >&2; }
die() { echo "docker-engine: ERROR: $*" >&2; exit 1; }

# `docker info` through any client we have (the engine API is the same for both).
engine_answers() {
    local c
    for c in docker /usr/bin/docker; do
        if command -v "$c" >/dev/null 2>&1 && "$c" info >/dev/null 2>&1; then
            return 0
        fi
    done
    return 1
}

# Packages this invocation needs that dpkg does not report as installed.
missing_packages() {
    local p
    # debian-archive-keyring: what debootstrap checks Debian's Release files with (Debian has it; Ubuntu does not)
    local wanted=(docker.io debootstrap debian-archive-keyring)
    if [ "$ARM64" = 1 ]; then
        wanted+=(qemu-user-static binfmt-support)
    fi
    if [ "$REGISTRY" = 1 ]; then
        wanted+=(docker-registry skopeo)
    fi
    for p in "${wanted[@]}"; do
        # Captured, not piped into `grep -q`: with pipefail an early-exiting grep turns the
        # writer's SIGPIPE into a failure.
        case "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" in
            *'install ok installed'*) ;;
            *) echo "$p" ;;
        esac
    done
}

# True when apt knows an installable version of every package given.
apt_has_candidates() {
    local p
    for p in "$@"; do
        case "$(apt-cache policy "$p" 2>/dev/null || true)" in
            *'Candidate: ('*|'') return 1 ;;
            *'Candidate: '*) ;;
            *) return 1 ;;
        esac
    done
}

install_packages() {
    [ $# -gt 0 ] || return 0
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
    [ "$(id -u)" = 0 ] || die "need root to install: $*"
    export DEBIAN_FRONTEND=noninteractive
    local updated=0
    if ! apt_has_candidates "$@"; then
        log "apt-get update (package lists are missing or stale)"
        apt-get update -qq >&2 || die "apt-get update failed"
        updated=1
    fi
    log "apt-get install -y $*"
    if ! apt-get install -y -qq --no-install-recommends "$@" >&2; then
        # Lists that name versions the mirror no longer has fail with 404: refresh once, retry.
        [ "$updated" = 0 ] || die "apt-get install $* failed"
        log "apt-get install failed; apt-get update and one retry"
        apt-get update -qq >&2 || die "apt-get update failed"
        apt-get install -y -qq --no-install-recommends "$@" >&2 || die "apt-get install $* failed"
    fi
}

# binfmt-support's postinst registers qemu-aarch64 only when binfmt_misc is mounted, which is
# not the case in every container; mount it and (re)enable the handler so arm64 binaries run.
ensure_arm64_emulation() {
    local bm=/proc/sys/fs/binfmt_misc
    if [ ! -e "$bm/register" ]; then
        mount -t binfmt_misc binfmt_misc "$bm" 2>/dev/null \
            || log "warning: could not mount binfmt_misc at $bm"
    fi
    if [ ! -e "$bm/qemu-aarch64" ] && command -v update-binfmts >/dev/null 2>&1; then
        update-binfmts --enable qemu-aarch64 >&2 2>&1 \
            || log "warning: update-binfmts --enable qemu-aarch64 failed"
    fi
    if [ -e "$bm/qemu-aarch64" ]; then
        log "arm64 emulation: qemu-aarch64 registered ($(head -n1 "$bm/qemu-aarch64"))"
    else
        die "arm64 emulation not available: $bm/qemu-aarch64 is not registered"
    fi
}

# A docker client that builds with BuildKit: one with the buildx plugin, or a pre-23 client
# (BuildKit built in, enabled by DOCKER_BUILDKIT=1).
buildkit_client() {
    local c v
    for c in /usr/bin/docker "$(command -v docker 2>/dev/null || true)"; do
        if [ -z "$c" ] || [ ! -x "$c" ]; then
            continue
        fi
        if "$c" buildx version >/dev/null 2>&1; then
            echo "$c"; return 0
        fi
        v="$("$c" version --format '{{.Client.Version}}' 2>/dev/null || true)"
        case "$v" in
            1[0-9].*|2[0-2].*) echo "$c"; return 0 ;;
        esac
    done
    return 1
}

start_dockerd() {
    command -v dockerd >/dev/null 2>&1 || die "dockerd not found after installing docker.io"
    local pidfile=/var/run/docker.pid pid=""
    if [ -s "$pidfile" ]; then
        pid="$(cat "$pidfile")"
        if kill -0 "$pid" 2>/dev/null; then
            log "dockerd already running (pid $pid), waiting for it to answer"
            DOCKERD_PID="$pid"
            return 0
        fi
        log "removing stale $pidfile (pid $pid is gone)"
        rm -f "$pidfile"
    fi
    mkdir -p "$(dirname "$LOG")"
    log "starting dockerd in the background, log: $LOG"
    # setsid + nohup: dockerd must outlive this script and its terminal.
    setsid nohup dockerd >>"$LOG" 2>&1 </dev/null &
    DOCKERD_PID=$!
}

wait_for_engine() {
    local waited=0
    while ! engine_answers; do
        if [ -n "${DOCKERD_PID:-}" ] && ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
            log "dockerd (pid $DOCKERD_PID) exited; last lines of $LOG:"
            tail -n 30 "$LOG" >&2 || true
            die "dockerd exited before answering"
        fi
        if [ "$waited" -ge "$TIMEOUT" ]; then
            log "last lines of $LOG:"
            tail -n 30 "$LOG" >&2 || true
            die "no Docker engine answered 'docker info' within ${TIMEOUT}s (log: $LOG)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "engine answers after ${waited}s"
}

# docker-registry's package would start (and enable) a registry on :5000 on every interface; the
# tests run the binary on loopback themselves. A policy-rc.d that refuses service starts keeps the
# install from starting it (an existing policy-rc.d is left as it is), and a systemd host gets it
# disabled.
install_registry_tools() {
    local made=0
    [ $# -gt 0 ] || return 0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made=1
    fi
    install_packages "$@" || { [ "$made" = 0 ] || rm -f /usr/sbin/policy-rc.d; exit 1; }
    [ "$made" = 0 ] || rm -f /usr/sbin/policy-rc.d
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now docker-registry >&2 2>&1 || true
    fi
}

mapfile -t MISSING < <(missing_packages)
REGISTRY_MISSING=()
OTHERS=()
for p in "${MISSING[@]}"; do
    case "$p" in
        docker-registry|skopeo) REGISTRY_MISSING+=("$p") ;;
        *) OTHERS+=("$p") ;;
    esac
done
if engine_answers && [ ${#MISSING[@]} -eq 0 ]; then
    log "engine already answers"
else
    install_packages "${OTHERS[@]}"
    install_registry_tools "${REGISTRY_MISSING[@]}"
    if ! engine_answers; then
        start_dockerd
        wait_for_engine
    fi
fi
if [ "$ARM64" = 1 ]; then
    ensure_arm64_emulation
fi

client="$(buildkit_client)" || die "no docker client with BuildKit found (want Debian's 20.10 /usr/bin/docker or one with buildx)"
log "$("$client" version --format 'engine {{.Server.Version}}, BuildKit client {{.Client.Version}}' 2>/dev/null || true) at $client"
log "build with: DOCKER_BUILDKIT=1 $client build ..."
echo "BUILDKIT_DOCKER=$client"
