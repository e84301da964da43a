#!/usr/bin/env bash
# The main job on a fresh machine: set up, export the real-size ViT-H/14 I-JEPA (random weights:
# the Hugging Face Hub is not reachable here) to fp32/fp16/int8/int8-cpu ONNX with parity gates, then embed
# real photographs with the torch-free runtime and print their cosine similarities.
# With Hub access, replace --random-init by --checkpoint facebook/ijepa_vith14_1k.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
photos=engines/demo-photos
mkdir -p "$photos/calib" "$photos/eval"
.venv/bin/python - "$photos" <<'PY'
import shutil, sys
from pathlib import Path
import skimage
data, out = Path(skimage.__file__).parent / "data", Path(sys.argv[1])
for split, names in {"calib": ["astronaut.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg",
                               "motorcycle_left.png", "retina.jpg"],
                     "eval": ["chelsea.png", "motorcycle_right.png", "camera.png", "ihc.png"]}.items():
    for name in names:
        shutil.copy(data / name, out / split / name)
PY
.venv/bin/ijepa-export --variant vith14 --random-init --precision fp32,fp16,int8,int8-cpu --max-batch 8 \
  --calib-images "$photos/calib" --eval-images "$photos/eval" --output-dir engines --overwrite
for precision in fp32 int8-cpu; do
  echo "== ijepa-embed --precision $precision"
  .venv/bin/ijepa-embed --artifacts engines/vith14_1k --precision "$precision" --similarity \
    --output "engines/demo-embeddings-$precision.npy" "$photos/eval"
done
echo "report: engines/vith14_1k/report.md"
