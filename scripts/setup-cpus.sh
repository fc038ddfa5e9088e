#!/usr/bin/env bash
# Exclusive evaluation CPUs (README "Exclusive CPUs, interference and re-measurement").
# Creates two cpuset cgroups and moves the Docker daemon and containerd into the platform one:
#   arena-platform  every CPU but the evaluation CPUs: services, dockerd, containerd, builds, sidecar
#   arena-eval      only the evaluation CPUs: the cgroup parent of every evaluation container
# Idempotent; needs root and a writable cgroup filesystem (v1 cpuset hierarchy, or v2 with cpuset).
# Where it cannot, it says why and exits 0: evaluations then run without exclusive CPUs, the
# interference monitor still measures every timed run. ARENA_CPU_ISOLATION=off skips it entirely.
#
# ARENA_EVAL_CPUS: the evaluation CPUs (union of every worker's cpuset), default ARENA_SANDBOX_CPUSET,
# else the host's last CPU. ARENA_CGROUP_ROOT: the cgroup mount (default /sys/fs/cgroup).
set -euo pipefail

log() { printf '[setup-cpus] %s\n' "$*" >&2; }
skip() { log "CPU isolation not set up: $*"; log "evaluations run on shared CPUs; disturbed runs are still detected and re-measured (set ARENA_CPU_ISOLATION=off to silence this)"; exit 0; }

case "${ARENA_CPU_ISOLATION:-on}" in off|0|false|no) log "ARENA_CPU_ISOLATION=off: skipped"; exit 0;; esac

ROOT=${ARENA_CGROUP_ROOT:-/sys/fs/cgroup}
ONLINE=$(cat /sys/devices/system/cpu/online)

expand() {  # "0-2,5" -> "0 1 2 5"
  local part out=()
  IFS=, read -ra parts <<<"$1"
  for part in "${parts[@]}"; do
    if [[ $part == *-* ]]; then out+=($(seq "${part%-*}" "${part#*-}")); else out+=("$part"); fi
  done
  echo "${out[@]}"
}
join() { local IFS=,; echo "$*"; }

ALL=($(expand "$ONLINE"))
EVAL_SPEC=${ARENA_EVAL_CPUS:-${ARENA_SANDBOX_CPUSET:-${ALL[-1]}}}
[ "$EVAL_SPEC" = none ] && EVAL_SPEC=${ALL[-1]}
EVAL=($(expand "$EVAL_SPEC"))
PLATFORM=()
for c in "${ALL[@]}"; do [[ " ${EVAL[*]} " == *" $c "* ]] || PLATFORM+=("$c"); done
[ ${#PLATFORM[@]} -gt 0 ] || skip "the evaluation CPUs ($EVAL_SPEC) are every CPU of this host ($ONLINE)"
EVAL_CPUS=$(join "${EVAL[@]}"); PLATFORM_CPUS=$(join "${PLATFORM[@]}")

[ "$(id -u)" = 0 ] || skip "needs root (writes cgroups, moves dockerd)"

daemons() { pgrep -x dockerd || true; pgrep -x containerd || true; }

if [ -f "$ROOT/cpuset/cpuset.cpus" ]; then                 # cgroup v1
  base=$ROOT/cpuset
  [ -w "$base" ] || skip "$base is not writable"
  for g in arena-platform arena-eval; do
    mkdir -p "$base/$g"
    [ -n "$(cat "$base/$g/cpuset.mems")" ] || cat "$base/cpuset.mems" > "$base/$g/cpuset.mems"
  done
  echo "$PLATFORM_CPUS" > "$base/arena-platform/cpuset.cpus"
  # shrinking arena-eval fails while a container below it uses a CPU being removed: say so
  echo "$EVAL_CPUS" > "$base/arena-eval/cpuset.cpus" || skip "cannot set $base/arena-eval to $EVAL_CPUS (containers still running below it?)"
  for pid in $(daemons); do echo "$pid" > "$base/arena-platform/cgroup.procs" || log "could not move pid $pid"; done
  log "cgroup v1: arena-platform = CPUs $PLATFORM_CPUS (dockerd, containerd, services), arena-eval = CPUs $EVAL_CPUS"
elif [ -f "$ROOT/cgroup.controllers" ]; then               # cgroup v2
  grep -qw cpuset "$ROOT/cgroup.controllers" || skip "the cpuset controller is not available in $ROOT"
  echo +cpuset > "$ROOT/cgroup.subtree_control" 2>/dev/null || skip "cannot enable cpuset in $ROOT/cgroup.subtree_control"
  for g in arena-platform arena-eval; do mkdir -p "$ROOT/$g"; done
  echo "$PLATFORM_CPUS" > "$ROOT/arena-platform/cpuset.cpus"
  echo "$EVAL_CPUS" > "$ROOT/arena-eval/cpuset.cpus"
  # an exclusive partition: no other cgroup may use these CPUs (best effort: refused if one does)
  echo root > "$ROOT/arena-eval/cpuset.cpus.partition" 2>/dev/null || log "arena-eval is not an exclusive partition (another cgroup uses CPUs $EVAL_CPUS)"
  for pid in $(daemons); do echo "$pid" > "$ROOT/arena-platform/cgroup.procs" || log "could not move pid $pid"; done
  log "cgroup v2: arena-platform = CPUs $PLATFORM_CPUS, arena-eval = CPUs $EVAL_CPUS"
else
  skip "no cgroup cpuset filesystem under $ROOT"
fi
