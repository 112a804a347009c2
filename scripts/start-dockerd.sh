#!/usr/bin/env bash
# Install (if missing) and start a Docker engine in the background, then wait until it answers.
#
# Idempotent: does nothing but check when `docker info` already works. Meant for development
# and CI machines without systemd (containers, VMs started bare); on a host with systemd,
# prefer `systemctl start docker`.
#
# Environment:
#   DOCKERD_LOG         where dockerd writes its log      (default /var/log/dockerd.log)
#   DOCKERD_WAIT_S      how long to wait for the engine   (default 60)
#   DOCKERD_EXTRA_ARGS  extra flags for the first attempt (default none)
#
# Exit status: 0 when the engine answers, non-zero with a message on stderr otherwise.
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/dockerd.log}
wait_s=${DOCKERD_WAIT_S:-60}
sock=/var/run/docker.sock

die() {
  echo "start-dockerd: $*" >&2
  exit 1
}

engine_up() {
  # Ask the socket itself: DOCKER_HOST may point at a proxy that denies /info.
  DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1
}

install_missing() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker >/dev/null 2>&1 || missing+=(docker.io)
  command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; run as root or install them first"
  echo "start-dockerd: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  # policy-rc.d may forbid starting services during install; we start dockerd ourselves.
  apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

# Start dockerd with the given flags; succeed once the engine answers within the wait.
try_start() {
  echo "start-dockerd: starting dockerd $* (log: $log)" >&2
  # setsid: the engine must outlive this script and the shell that ran it.
  setsid dockerd "$@" >>"$log" 2>&1 </dev/null &
  local pid=$!
  local deadline=$((SECONDS + wait_s))
  while [ $SECONDS -lt $deadline ]; do
    if engine_up; then
      echo "start-dockerd: engine up (pid $pid)" >&2
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "start-dockerd: dockerd $* exited early; last log lines:" >&2
      tail -n 15 "$log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
  echo "start-dockerd: dockerd $* did not answer within ${wait_s}s; stopping it" >&2
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return 1
}

if engine_up; then
  echo "start-dockerd: engine already running" >&2
  exit 0
fi

install_missing

if pgrep -x dockerd >/dev/null 2>&1; then
  # Another dockerd is starting (or hung): give it the wait before declaring failure.
  deadline=$((SECONDS + wait_s))
  while [ $SECONDS -lt $deadline ]; do
    engine_up && exit 0
    sleep 0.5
  done
  die "a dockerd process exists but $sock does not answer; see $log"
fi

# A stale pid file from a killed engine makes dockerd refuse to start.
rm -f /var/run/docker.pid

# shellcheck disable=SC2086  # DOCKERD_EXTRA_ARGS is a list of flags on purpose
try_start ${DOCKERD_EXTRA_ARGS:-} && exit 0
rm -f /var/run/docker.pid
# Nested or restricted hosts often lack the iptables modules or the right to make bridges.
try_start --iptables=false --ip6tables=false && exit 0
rm -f /var/run/docker.pid
try_start --iptables=false --ip6tables=false --bridge=none && exit 0

die "could not start dockerd; see $log"
