#!/usr/bin/env bash
# The TensorRT path on its first GPU, in one command (needs an NVIDIA driver; TensorRT comes from pip):
# installs the tensorrt extra for the driver's CUDA major, exports vith14, builds fp16/int8 plans (fp8
# too where the GPU has compute capability >= 8.9), records them in the manifest (each gated against
# ONNX Runtime), runs the GPU tests and the GPU section of ijepa-bench, and writes the results to
# benchmarks/gpu-<gpu>.{json,md}, ready to commit.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: this script needs an NVIDIA GPU and driver" >&2; exit 1; }
cuda=$(nvidia-smi | grep -o 'CUDA Version: [0-9]*' | grep -o '[0-9]*$' || echo 12)
extra=tensorrt-cu12; [ "$cuda" -ge 13 ] && extra=tensorrt-cu13
scripts/setup.sh
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test,$extra]"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-//;s/-$//')
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d ' ')
photos=engines/demo-photos
[ -d "$photos/eval" ] || .venv/bin/python -m ijepa_deploy.bench.datasets "$photos" 24
plans=fp16,int8
awk -v a="$cc" 'BEGIN{exit !(a+0 >= 8.9)}' && plans=$plans,fp8
.venv/bin/ijepa-export --variant vith14 --random-init --precision "fp32,$plans" --max-batch 32 --opt-batch 8 \
  --calib-images "$photos/calib" --eval-images "$photos/eval" --output-dir engines --overwrite || {
  echo "fp8 may miss its gate on random weights (E4M3 noise over 32 blocks); retrying without it" >&2
  plans=fp16,int8
  .venv/bin/ijepa-export --variant vith14 --random-init --precision "fp32,$plans" --max-batch 32 --opt-batch 8 \
    --calib-images "$photos/calib" --eval-images "$photos/eval" --output-dir engines --overwrite; }
.venv/bin/ijepa-export build-engine --artifacts engines/vith14_1k --precision "$plans"
.venv/bin/python -m pytest -ra -m gpu tests/test_tensorrt.py
mkdir -p benchmarks
.venv/bin/ijepa-bench --artifacts engines/vith14_1k --backends tensorrt,onnxruntime --precision "fp32,$plans" \
  --batch-sizes 1,8,32 --json "benchmarks/gpu-$gpu.json" --markdown "benchmarks/gpu-$gpu.md"
echo "results: benchmarks/gpu-$gpu.{json,md} (commit them)"
