#!/usr/bin/env bash
# Make a Docker daemon available: install docker.io (+ debootstrap for the CPU base image) when
# missing, start dockerd in the background, wait until `docker info` answers. Idempotent: when a
# daemon already answers it does nothing. Needs root on Debian; no image registry is needed.
#
# Storage driver: overlay2 first; vfs when overlay2 cannot start (nested overlay filesystems),
# slower but always works. Set DAYONE_DOCKER_STORAGE to force one.
set -euo pipefail

log_dir="${DAYONE_CACHE:-$HOME/.cache/dayone}/docker"
mkdir -p "$log_dir"
log="$log_dir/dockerd.log"
wait_s="${DAYONE_DOCKER_WAIT_S:-40}"

say() { echo "docker-up: $*" >&2; }

docker_answers() { command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; }

# Only one caller at a time may install or start the daemon (tests in parallel, CI steps).
exec 9>"$log_dir/docker-up.lock"
flock 9

if docker_answers; then
    say "daemon already running"
    exit 0
fi

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || { say "need root to install ${missing[*]}"; exit 1; }
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" ca-certificates iptables >/dev/null
fi
[[ $(id -u) == 0 ]] || { say "dockerd is not running and only root can start it"; exit 1; }

start_dockerd() {  # $1 = storage driver; returns 0 once `docker info` answers
    local driver=$1 pid
    say "starting dockerd (storage driver $driver), log: $log"
    # setsid: the daemon must outlive this script and the shell that called it.
    # 9>&-: the daemon must not inherit the lock, or the next caller waits forever.
    setsid dockerd --storage-driver "$driver" >>"$log" 2>&1 </dev/null 9>&- &
    pid=$!
    echo "$pid" >"$log_dir/dockerd.pid"
    for ((i = 0; i < wait_s * 2; i++)); do
        if docker_answers; then
            say "daemon ready after $((i / 2)) s"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            say "dockerd ($driver) exited; last log lines:"
            tail -n 15 "$log" >&2
            return 1
        fi
        sleep 0.5
    done
    say "dockerd ($driver) did not answer in ${wait_s} s; stopping it"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 1
}

# A stale pid file from a daemon that died makes dockerd refuse to start.
if [[ -f /var/run/docker.pid ]] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
fi

if [[ -n "${DAYONE_DOCKER_STORAGE:-}" ]]; then
    start_dockerd "$DAYONE_DOCKER_STORAGE" && exit 0
else
    start_dockerd overlay2 && exit 0
    rm -f /var/run/docker.pid
    start_dockerd vfs && exit 0
fi
say "FAILED: Docker could not start here (see $log)"
exit 1
