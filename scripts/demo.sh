#!/usr/bin/env bash
# The main job on a fresh machine: set up, export the real-size ViT-H/14 I-JEPA (random weights: the
# Hugging Face Hub is not reachable here) to fp32/fp16/int8/int8-cpu (+ bf16 where the CPU has it)
# ONNX, every low precision gated on 18 held-out photographs; then embed photographs with the
# torch-free runtime, embed a collection into resumable shards and search it.
# With Hub access, replace --random-init by --checkpoint facebook/ijepa_vith14_1k.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
py=.venv/bin/python
photos=engines/demo-photos
[ -d "$photos/eval" ] || $py -m ijepa_deploy.bench.datasets "$photos" 24
precisions=fp32,fp16,int8,int8-cpu
if $py -c "from ijepa_deploy.runtime.backends.openvino_backend import cpu_has_bf16, openvino_unavailable_reason as r; exit(0 if not r() and cpu_has_bf16() else 1)"; then
  precisions=$precisions,bf16
fi
.venv/bin/ijepa-export --variant vith14 --random-init --precision "$precisions" --max-batch 8 \
  --calib-images "$photos/calib" --eval-images "$photos/eval" --output-dir engines --overwrite
echo "== ijepa-embed --precision int8-cpu --similarity (4 photos)"
.venv/bin/ijepa-embed --artifacts engines/vith14_1k --precision int8-cpu --similarity \
  "$photos"/eval/astronaut.png "$photos"/eval/chelsea.png "$photos"/eval/camera.png "$photos"/eval/horse.png
echo "== ijepa-embed a collection into shards, then search it"
rm -rf engines/demo-collection
.venv/bin/ijepa-embed --artifacts engines/vith14_1k --precision int8-cpu --output-dir engines/demo-collection \
  --shard-size 16 "$photos"
.venv/bin/ijepa-index build engines/demo-collection
.venv/bin/ijepa-index query --artifacts engines/vith14_1k --index engines/demo-collection -k 3 "$photos/eval/chelsea.png"
echo "report: engines/vith14_1k/report.md"
