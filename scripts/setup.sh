#!/usr/bin/env bash
# Create .venv (Python >= 3.10) and install ijepa-deploy with its test extras (export, OpenVINO, Ray,
# FAISS, benchmark). torch is pinned to 2.13.0 (constraints.txt): any other spec pulls the multi-GB
# CUDA build. Also fetches the TensorRT 10.3 (JetPack 6), 10.13 and 11.4 Python bindings wheels (1 MB
# each) and the cuda-python 12 and 13 runtime modules, never installed, so the tests can check every
# TensorRT and CUDA name the code uses against the real modules.
# Re-running is cheap: nothing is reinstalled unless pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
# fetch_wheel SPEC DEST CHECK PREFIX: download SPEC's wheel (no deps, never installed) and unpack the members
# starting with PREFIX into DEST (a cuda-bindings runtime module is stored as cuda/bindings/runtime.so).
fetch_wheel() {
  [ -f "$2/$3" ] && return 0
  local tmp
  tmp=$(mktemp -d)
  if "$VENV/bin/python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$tmp" "$1" 2>/dev/null; then
    mkdir -p "$2" && "$VENV/bin/python" - "$tmp" "$2" "$4" <<'PY'
import sys, zipfile, pathlib
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
dest, prefix = pathlib.Path(sys.argv[2]), sys.argv[3]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.startswith("cuda/bindings/_"):
            target = dest / ("cuda/bindings/runtime.so" if name.startswith("cuda/bindings/runtime.cpython") else name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
PY
  else
    echo "note: could not download $1; the API-name tests for it will skip" >&2
  fi
  rm -rf "$tmp"
}
stamp="$VENV/.ijepa-deploy-installed"
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet -c constraints.txt "torch==2.13.0"
  "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[test]"
  # Never installed: the test suite checks every TensorRT / cuda-python name our code uses against them.
  # 10.3 is JetPack 6's TensorRT (its wheel is tagged manylinux_2_17, later ones manylinux_2_28).
  for version in 10.3.0 10.13.3.9 11.4.0.106; do
    fetch_wheel "tensorrt-cu12-bindings==$version" "$VENV/share/tensorrt-bindings/$version" \
      "tensorrt_bindings/tensorrt.so" tensorrt_bindings/
  done
  for version in 12.9.10 13.5.0; do
    fetch_wheel "cuda-bindings==$version" "$VENV/share/cuda-bindings/$version" \
      "cuda/bindings/runtime.so" "cuda/bindings/runtime.cpython"
  done
  echo "$want" > "$stamp"
fi
