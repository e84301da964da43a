"""The int8 file with a float32 float region (an export from before) against one with a float16 float region (an
export from now), and int8-cpu, under OpenVINO and ONNX Runtime: ViT-H at batch 8 on the same photos, interleaved.

    .venv/bin/python scripts/int8_float_region.py BEFORE_ARTIFACTS AFTER_ARTIFACTS [ROUNDS]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from ijepa_deploy.bench.extras import bench_photos
from ijepa_deploy.runtime import EmbedConfig, Embedder


def main(before: Path, after: Path, rounds: int) -> dict:
    paths = {"int8, float32 region (before)": (before, "int8"), "int8, float16 region (after)": (after, "int8"),
             "int8-cpu (after)": (after, "int8-cpu")}
    photos, results = bench_photos(None), {}
    for backend in ("openvino", "onnxruntime"):
        runners = {}
        for label, (folder, precision) in paths.items():
            embedder = Embedder.load(folder, config=EmbedConfig(precision=precision, backend=backend, batch_size=8))
            pixels = embedder.preprocessor(photos[:8])
            embedder.backend.run(pixels)  # compile and warm
            runners[label] = (embedder, pixels)
        times = {label: [] for label in runners}
        for _ in range(rounds):
            for label, (embedder, pixels) in runners.items():
                time.sleep(0.5)  # untimed: the previous runner's threads park
                start = time.perf_counter()
                embedder.backend.run(pixels)
                times[label].append(time.perf_counter() - start)
        for label, (embedder, _) in runners.items():
            results[f"{backend}: {label}"] = round(8 / statistics.median(times[label]), 2)
            embedder.close()
    return results


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 3), indent=1))
