#!/usr/bin/env bash
# Packs Ray 2.60.0 for the device, which has Python 3.12 and no network, into what a call can carry (~22 MB):
#   bash benchmarks/device/pack_ray.sh [TAG [DIR]]    (from the repo root; TAG: python tag, default 312; DIR: .ray)
# It downloads Ray's wheel for cpTAG and jsonschema's (the one dependency of Ray the device image lacks), unpacks
# them into a site dir, deletes what a local cluster running tasks does not use, strips the binaries' symbols, and
# writes the site dir as DIR/rayTAG.tar.xz (to go first on PYTHONPATH; see render_ray.sh). TAG 311 makes the same
# cut for this machine's Python 3.11, to test it here before the device: give it another DIR, as .ray is carried.
set -euo pipefail
TAG=${1:-312}
DIR=${2:-.ray}
SITE=/tmp/raystage$TAG
WHEELS=/tmp/raywheels$TAG
OUT=$DIR/ray$TAG.tar.xz

python3 -m pip download -q --no-deps --only-binary=:all: --python-version "3.${TAG#3}" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d "$WHEELS" \
    ray==2.60.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
rm -rf "$SITE" && mkdir -p "$SITE"
for w in "$WHEELS"/*.whl; do unzip -q -o "$w" -d "$SITE"; done

# What `ray.init(address="local")`, tasks and `ray start --head` never import: the Java worker, the ML libraries,
# the dashboard's web pages (we run with include_dashboard=False), Cython headers and type stubs.
(cd "$SITE/ray" && rm -rf jars rllib serve tune train llm data air workflow dashboard/client includes _raylet.pxd \
    setup-dev.py && find . -name '*.pyi' -delete)
# Symbols only name C++ frames in crash reports; they are a third of the binaries (2 MB of the tarball).
find "$SITE" -name '*.so' -exec strip --strip-unneeded {} +
strip --strip-unneeded "$SITE"/ray/core/src/ray/{raylet/raylet,gcs/gcs_server}

# One xz stream (-T1) with a window that holds all of it: the three big binaries (raylet, gcs_server, _raylet.so)
# share much of their code, which only then is stored once: 13 MB for the three, against 20 MB xz'd apart (14 MB
# with xz -9's 64 MiB window and no --x86, a filter for machine code).
mkdir -p "$DIR"
tar -C "$SITE" -cf - . | xz -T1 --x86 --lzma2=preset=9e,dict=192MiB > "$OUT"
echo "$OUT: $(du -b "$OUT" | cut -f1) bytes; unpacked $(du -sh "$SITE" | cut -f1)"
