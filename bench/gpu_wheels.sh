#!/usr/bin/env bash
# Wheels of the packages bench/gpu_check.sh needs that the GPU machine lacks (~38 MB), into .whl/ (git-ignored), for
# Python 3.12 on x86-64 Linux (the GPU machine's; see the device tool's KINDS.md). Run it where the package
# registries are reachable, then name .whl in the device call's `carry`. DeepSpeed ships as a source package: its
# wheel is built here with DS_BUILD_OPS=0 (pure Python; its CUDA ops are compiled just in time where used).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
rm -rf .whl && mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
# The versions this checkout's .venv runs (the tests' versions), so the GPU run uses the same code. hdf5plugin (46 MB)
# is left out: the checks build caches with the default codec (none), which needs no plugin, and a device call
# carries at most 64 MiB.
pin() { "$PY" -c "import importlib.metadata as m, sys; print(sys.argv[1] + '==' + m.version(sys.argv[1]))" "$1"; }
binary=()
for name in rasterio affine click-plugins cligj submitit hjson pydantic pydantic-core annotated-types \
    typing-inspection; do
    binary+=("$(pin "$name")")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d .whl "${binary[@]}"
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps -w .whl "$(pin deepspeed)"
du -sh .whl
ls .whl
