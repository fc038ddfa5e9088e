#!/usr/bin/env bash
# Build the official base images once; later calls reuse them (delete the image to force a rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[build-images] %s\n' "$*" >&2; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

base_image() {
  # Prefer a registry image; this host may have no registry, then debootstrap a minimal bookworm.
  if image_exists debian:bookworm-slim || timeout 30 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
    echo debian:bookworm-slim; return
  fi
  if ! image_exists arena/bookworm-base:1; then
    command -v debootstrap >/dev/null || { log "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
    local root; root=$(mktemp -d /tmp/arena-rootfs.XXXXXX)
    log "no registry: debootstrap bookworm into $root (about a minute)"
    debootstrap --variant=minbase bookworm "$root" >/tmp/arena-debootstrap.log 2>&1 \
      || { tail -n 20 /tmp/arena-debootstrap.log >&2; exit 1; }
    tar -C "$root" -c . | docker import - arena/bookworm-base:1 >/dev/null
    rm -rf "$root"
  fi
  echo arena/bookworm-base:1
}

digest() { # a hash of everything that goes into an official image, stored as a label
  cat "$@" | sha256sum | cut -c1-16
}

# The image ID of each official image, recorded for sandbox/build.py, which refuses to build FROM an
# official image whose local ID is not the recorded one (ARENA_OFFICIAL_IMAGES_DIR).
RECORDS="${ARENA_OFFICIAL_IMAGES_DIR:-/var/lib/decode-arena/official-images}"
record() {
  mkdir -p "$RECORDS"
  docker image inspect -f '{{.Id}}' "$1" > "$RECORDS/$(printf '%s' "$1" | tr '/:' '__').tmp"
  mv "$RECORDS/$(printf '%s' "$1" | tr '/:' '__').tmp" "$RECORDS/$(printf '%s' "$1" | tr '/:' '__')"
}

build_python_cpu() {
  local ctx=images/python-cpu want tag="${ARENA_PYTHON_CPU_TAG:-arena/python-cpu:1}"
  cp sandbox/protocol.py "$ctx/arena_protocol.py"
  want=$(digest "$ctx/Dockerfile" "$ctx/packages.sh" "$ctx/arena_protocol.py")
  if image_exists "$tag" && \
     [ "$(docker image inspect -f '{{index .Config.Labels "org.decode-arena.source"}}' "$tag")" = "$want" ]; then
    record "$tag"; return
  fi
  local base cid packages="arena/python-cpu-packages:$want"; base=$(base_image)
  # Debian's packages need network: the platform's own container under runc, committed. Every
  # `docker build` step runs under runsc-build (the engine's default runtime), without network.
  log "installing packages into $base (runc, network), then building $tag"
  cid=$(docker create --runtime runc --network bridge "$base" sh -c "$(cat "$ctx/packages.sh")")
  if ! docker start -a "$cid" >/tmp/arena-packages.log 2>&1; then
    tail -n 20 /tmp/arena-packages.log >&2; docker rm -f "$cid" >/dev/null; exit 1
  fi
  docker commit "$cid" "$packages" >/dev/null
  docker rm "$cid" >/dev/null
  docker build -q --network none --build-arg "BASE=$packages" --label "org.decode-arena.source=$want" \
    -t "$tag" "$ctx" >/dev/null
  docker image rm "$packages" >/dev/null   # the tag only: its layers are the image's own
  record "$tag"
}

build_torch_cuda() { # `make images-gpu`: ~2.7 GB of CUDA wheels from PyPI, so never on `make demo`'s path
  local ctx=images/torch-cuda want tag="${ARENA_TORCH_CUDA_TAG:-arena/torch-cuda:1}" torch=2.13.0
  image_exists arena/python-cpu:1 || build_python_cpu
  cp sandbox/protocol.py "$ctx/arena_protocol.py"
  want=$( (cat "$ctx/Dockerfile" "$ctx/arena_protocol.py"; docker image inspect -f '{{.Id}}' arena/python-cpu:1) \
          | sha256sum | cut -c1-16)
  if image_exists "$tag" && \
     [ "$(docker image inspect -f '{{index .Config.Labels "org.decode-arena.source"}}' "$tag")" = "$want" ]; then
    record "$tag"; return
  fi
  # Builds have no network: the wheels come from PyPI on the host, for the image's Python 3.11 on
  # x86_64; no pip config file, find-links or constraint applies (a local CPU build of the same
  # version, 2.13.0+cpu, would otherwise win).
  log "downloading torch==$torch (CUDA) and its wheels from PyPI into $ctx/wheelhouse (~2.7 GB)"
  # The host's own platform tags (pip does not widen an explicit --platform to older manylinux
  # versions, and the nvidia-* wheels use several): an x86_64 Linux host with glibc >= 2.28.
  [ "$(uname -m)" = x86_64 ] || { log "build arena/torch-cuda:1 on an x86_64 host"; exit 1; }
  PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_CONSTRAINT= python3 -m pip download -q --only-binary=:all: \
    --python-version 3.11 --implementation cp -d "$ctx/wheelhouse" "torch==$torch"
  log "building $tag from arena/python-cpu:1"
  docker build -q --network none --build-arg "TORCH_VERSION=$torch" --label "org.decode-arena.source=$want" \
    -t "$tag" "$ctx" >/dev/null
  rm -rf "$ctx/wheelhouse"
  record "$tag"
  # The install stage (wheels and all, ~8 GB) is left as an untagged image: remove it by its label.
  docker image ls -q --filter label=org.decode-arena.stage=torch-cuda-install | xargs -r docker image rm >/dev/null || true
}

case "${1:-python-cpu}" in
  python-cpu) build_python_cpu ;;
  torch-cuda) build_torch_cuda ;;
  *) log "unknown image ${1}; known: python-cpu, torch-cuda"; exit 2 ;;
esac
