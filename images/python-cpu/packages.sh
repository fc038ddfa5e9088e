#!/bin/sh
# The Debian packages of arena/python-cpu:1. scripts/build-images.sh runs this with network in a
# container of the platform's own (runtime runc) and commits the result: `docker build` steps have
# no network (they run under runsc-build, the engine's default runtime).
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-numpy python3-venv python3-pip \
  libopenblas0-serial ca-certificates
rm -rf /var/lib/apt/lists/*
