#!/usr/bin/env bash
# Make sure a Docker engine with gVisor answers, configured the way the sandbox needs it, installing
# it on Debian/Ubuntu as root. Idempotent: does nothing when the engine already has this configuration.
#
# The configuration (README "Security model" > "Builds"):
# - runtime `runsc`: gVisor for evaluations (--platform=ptrace, --network=none, --oci-seccomp so the
#   sandbox's seccomp profile is enforced inside gVisor too);
# - runtime `runsc-build` (/usr/local/lib/decode-arena/runsc-build, from scripts/engine/): gVisor with
#   no network for build steps, and the engine's DEFAULT runtime: the classic builder runs every RUN
#   step with the default runtime. Anything that must run under runc asks for it (--runtime runc).
# An engine that is already running is reconfigured with SIGHUP (runtimes and default-runtime are
# reloadable): running containers and other users of the engine are not disturbed.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup-engine] %s\n' "$*" >&2; }

CONF=/etc/docker/daemon.json
WRAPPER=/usr/local/lib/decode-arena/runsc-build

have_engine() { docker info >/dev/null 2>&1; }
configured() {
  [ "$(docker info --format '{{.DefaultRuntime}}' 2>/dev/null)" = runsc-build ] \
    && docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"' \
    && cmp -s scripts/engine/runsc-build "$WRAPPER" \
    && grep -q -- --oci-seccomp "$CONF" 2>/dev/null
}

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

# Writes the wrapper and merges the runtimes into daemon.json (other keys kept); prints "changed"
# when the engine must reload its configuration.
write_config() {
  [ -x /usr/bin/runsc ] || { log "gVisor's runsc is missing (apt-get install runsc)"; exit 1; }
  if ! cmp -s scripts/engine/runsc-build "$WRAPPER"; then
    install -D -m 0755 scripts/engine/runsc-build "$WRAPPER"
  fi
  mkdir -p /etc/docker
  python3 - "$CONF" "$WRAPPER" <<'PY'
import json, os, sys
path, wrapper = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        conf = json.load(f)
except FileNotFoundError:
    conf = {}
before = json.dumps(conf, sort_keys=True)
runtimes = conf.setdefault("runtimes", {})
# --network=none: runsc refuses to start with its own netstack on this kind of host, and neither
# evaluations nor builds have network anyway.
runtimes["runsc"] = {"path": "/usr/bin/runsc",
                     "runtimeArgs": ["--platform=ptrace", "--network=none", "--oci-seccomp"]}
runtimes["runsc-build"] = {"path": wrapper}
conf["default-runtime"] = "runsc-build"
if json.dumps(conf, sort_keys=True) != before:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(conf, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    print("changed")
PY
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

reload_dockerd() {
  log "reloading dockerd's configuration (SIGHUP: runtimes, default-runtime)"
  kill -HUP "$(pidof dockerd)"
  for _ in $(seq 1 20); do
    configured && return 0
    sleep 0.5
  done
  log "dockerd did not take the new configuration; see /var/log/arena-dockerd.log"
  exit 1
}

if have_engine && configured; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  have_engine || install_packages   # explains what to do, exits
  log "the engine is not configured for sandboxed builds (default runtime runsc-build);"
  log "run this script as root once: builds would otherwise run outside gVisor"
  exit 1
fi
if ! have_engine; then
  command -v dockerd >/dev/null && [ -x /usr/bin/runsc ] && command -v debootstrap >/dev/null || install_packages
  write_config >/dev/null
  start_dockerd
  configured || { log "dockerd started without the sandbox runtimes; see $CONF"; exit 1; }
else
  [ -x /usr/bin/runsc ] || install_packages
  if [ "$(write_config)" = changed ] || ! configured; then reload_dockerd; fi
fi
exit 0
