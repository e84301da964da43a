#!/usr/bin/env bash
# The GPU check, on whatever GPU machine is at hand (PyTorch with CUDA and cuda-python; TensorRT,
# network and pip installs optional): reference-model parity fp32/TF32/fp16/bf16 on CUDA vs CPU fp32,
# the transformers GPU baselines (fp16/bf16, SDPA, batch 1/8/64), the cuda-python half of our TensorRT
# backend, and the TensorRT GPU tests where TensorRT imports. Installs nothing, finishes well under 10
# minutes (BUDGET seconds, default 480), writes benchmarks/gpu-<gpu>.{json,md}, ready to commit.
# Python: $PYTHON, else .venv/bin/python, else python3/python, whichever first has torch with CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
has_cuda='import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'
pick=""
for py in "${PYTHON:-}" .venv/bin/python python3 python; do
  [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 || continue
  if "$py" -c "$has_cuda" 2>/dev/null; then pick=$py; break; fi
  [ -z "$pick" ] && "$py" -c 'import torch' 2>/dev/null && pick=$py  # no CUDA: it will say why
done
[ -n "$pick" ] || { echo "gpu-check: no Python here has torch (tried \$PYTHON, .venv/bin/python, python3, python)" >&2; exit 1; }
# bench/gpu_check.py maps ijepa_deploy.* onto this checkout itself (pyproject's package-dir): nothing to install.
exec "$pick" bench/gpu_check.py --budget "${BUDGET:-480}" "$@"
