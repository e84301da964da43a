"""The precision x model table: the outlier checkpoints of ijepa_deploy.bench.datasets at each strength, exported
with the previous recipe (no migration, no mixed precision) and with the current one, every gate figure
from the manifests and ONNX Runtime / OpenVINO speed at batch 8, interleaved.

    .venv/bin/python scripts/precision_table.py OUT_DIR [--vith14 ARTIFACTS]   # writes OUT_DIR/precision-table.md
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ijepa_deploy.bench.datasets import STRENGTHS, make_outlier_checkpoint, write_photos
from ijepa_deploy.exporter import ExportOptions, export
from ijepa_deploy.exporter.errors import GateError
from ijepa_deploy.reference_model import load_checkpoint

PRECISIONS = ("fp32", "int8", "int8-cpu", "fp8")


def speed(folder: Path, precision: str, backend: str, photos: Path) -> float:
    from ijepa_deploy.runtime import Embedder

    with Embedder.load(folder, precision, backend=backend) as embedder:
        pixels = embedder.preprocessor(sorted(photos.iterdir())[:8])
        embedder.backend.run(pixels)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            embedder.backend.run(pixels)
            times.append(time.perf_counter() - start)
    return 8 / float(np.median(times))


def row(model: str, recipe: str, precision: str, art: dict | None, error: str | None = None, ips: dict | None = None):
    if art is None:
        centered = error.split("centered_cosine ")[1].split(" ")[0] if error and "centered_cosine " in error else "?"
        return f"| {model} | {recipe} | {precision} | refused | - | {centered} | - | - | - | - |"
    m = art["validation"].get("metrics", {})
    q = art.get("quantization") or {}
    fraction = q.get("quantized_flop_fraction")
    speeds = " / ".join(f"{v:.1f}" for v in (ips or {}).values()) or "-"
    return (f"| {model} | {recipe} | {precision} | passed | {m.get('pooled_cosine', 1):.6f} | "
            f"{m.get('centered_cosine', 1):.5f} | {m.get('top5_agreement', 1):.3f} | "
            f"{m.get('token_centered_cosine', 1):.5f} | {'-' if fraction is None else f'{fraction:.1%}'} | {speeds} |")


def main(out: Path, vith14: Path | None) -> None:
    photos = write_photos(out / "photos") if not (out / "photos" / "eval").exists() else \
        {"eval": out / "photos" / "eval", "calib": out / "photos" / "calib"}
    lines = ["| model | recipe | precision | gate | pooled cos | centered cos (worst) | top-5 agreement | "
             "token centered | quantized FLOPs | images/s b8 (ORT / OpenVINO) |", "|---|---|---|---|---|---|---|---|---|---|"]
    if vith14:
        data = json.loads((vith14 / "manifest.json").read_text())
        for precision, art in data["artifacts"].items():
            lines.append(row("vith14 (random init)", "current", precision, art))
    for name, strength in STRENGTHS.items():
        ckpt = out / f"ijepa_outliers_{name}"
        if not ckpt.exists():
            make_outlier_checkpoint(ckpt, strength)
        for recipe, kwargs in (("previous", dict(smooth_alpha=None, outlier_shift=False, mixed_precision=False)),
                               ("current", {})):
            for precision in PRECISIONS[1:]:
                options = ExportOptions(precisions=("fp32", precision), max_batch=8, output_dir=out / "engines",
                                        name=f"{name}-{recipe}-{precision}", overwrite=True,
                                        calib_images=photos["calib"], eval_images=photos["eval"], **kwargs)
                try:
                    folder = export(load_checkpoint(ckpt), options)
                except GateError as exc:
                    lines.append(row(f"outliers {name} (k={strength:g})", recipe, precision, None, str(exc)))
                    continue
                data = json.loads((folder / "manifest.json").read_text())
                ips = {"ort": speed(folder, precision, "onnxruntime", photos["eval"])}
                if precision != "fp8":
                    ips["openvino"] = speed(folder, precision, "openvino", photos["eval"])
                lines.append(row(f"outliers {name} (k={strength:g})", recipe, precision, data["artifacts"][precision],
                                 ips=ips))
    text = "\n".join(lines) + "\n"
    (out / "precision-table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0]), Path(args[2]) if len(args) > 2 and args[1] == "--vith14" else None)
