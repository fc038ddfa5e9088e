#!/usr/bin/env bash
# Make sure a Docker engine with gVisor (runsc) answers, installing it on Debian/Ubuntu as root.
# Idempotent: does nothing when `docker info` already works and runsc is registered.
set -euo pipefail

log() { printf '[setup-engine] %s\n' "$*" >&2; }

have_engine() { docker info >/dev/null 2>&1; }
have_runsc() { docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q runsc; }

install_packages() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "No Docker engine answers and this is not Debian/Ubuntu as root."
    log "Install Docker (and gVisor's runsc for sandboxing), start dockerd, then run this again."
    exit 1
  fi
  local missing=()
  for pkg in docker.io runsc debootstrap; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

register_runsc() {
  local conf=/etc/docker/daemon.json
  [ -x /usr/bin/runsc ] || return 0
  if ! grep -q runsc "$conf" 2>/dev/null; then
    mkdir -p /etc/docker
    # --network=none: runsc refuses to start with its own netstack on this kind of host;
    # the sandbox runs without network anyway.
    cat > "$conf" <<JSON
{"runtimes":{"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--platform=ptrace","--network=none"]}}}
JSON
    return 1   # config changed
  fi
  return 0
}

start_dockerd() {
  log "starting dockerd"
  mkdir -p /var/log
  # setsid: dockerd must outlive the make process that started it.
  setsid nohup dockerd >/var/log/arena-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    have_engine && return 0
    sleep 1
  done
  log "dockerd did not answer within 60 s; see /var/log/arena-dockerd.log"
  tail -n 20 /var/log/arena-dockerd.log >&2 || true
  exit 1
}

if have_engine && have_runsc; then exit 0; fi
if ! have_engine; then
  command -v dockerd >/dev/null && [ -x /usr/bin/runsc ] && command -v debootstrap >/dev/null || install_packages
  register_runsc || true
  start_dockerd
elif ! have_runsc && [ "$(id -u)" = 0 ]; then
  command -v runsc >/dev/null || install_packages
  if ! register_runsc; then
    log "runsc registered; restarting dockerd"
    pkill -x dockerd || true
    for _ in $(seq 1 30); do pgrep -x dockerd >/dev/null || break; sleep 1; done
    start_dockerd
  fi
fi
have_runsc || log "gVisor (runsc) is not registered with Docker: the sandbox falls back to runc"
exit 0
