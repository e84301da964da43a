#!/usr/bin/env bash
# Create .venv (Python >= 3.10) and install ijepa-deploy with its test extras (export, OpenVINO, Ray,
# FAISS, benchmark). torch is pinned to 2.13.0 (constraints.txt): any other spec pulls the multi-GB
# CUDA build. Also fetches the TensorRT 10.13 and 11.4 Python bindings wheels (1 MB each, never
# installed) so the tests can check every TensorRT name the code uses against the real modules.
# Re-running is cheap: nothing is reinstalled unless pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
stamp="$VENV/.ijepa-deploy-installed"
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet -c constraints.txt "torch==2.13.0"
  "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[test]"
  for version in 10.13.3.9 11.4.0.106; do
    dest="$VENV/share/tensorrt-bindings/$version"
    if [ ! -f "$dest/tensorrt_bindings/tensorrt.so" ]; then
      tmp=$(mktemp -d)
      if "$VENV/bin/python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
           --platform manylinux_2_28_x86_64 -d "$tmp" "tensorrt-cu12-bindings==$version" 2>/dev/null; then
        mkdir -p "$dest" && "$VENV/bin/python" -m zipfile -e "$tmp"/*.whl "$dest"
      else
        echo "note: could not download tensorrt-cu12-bindings $version; the TensorRT API-name test will skip" >&2
      fi
      rm -rf "$tmp"
    fi
  done
  echo "$want" > "$stamp"
fi
