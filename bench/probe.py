"""`python -m ijepa_deploy.bench.probe FOLDER SPEC BATCH [WEIGHTS] [THREADS]`: build one benchmark path in
a fresh process, run one batch, print this process's peak RSS as JSON (the memory column)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ijepa_deploy.contract.manifest import Manifest

from . import runners as R
from .machine import peak_rss_mb


def main(argv: list[str]) -> None:
    folder, spec, batch = Path(argv[0]), argv[1], int(argv[2])
    weights = Path(argv[3]) if len(argv) > 3 and argv[3] else None
    threads = int(argv[4]) if len(argv) > 4 and argv[4] else None
    manifest = Manifest.load(folder)
    pre = manifest.preprocessing
    # a shaped batch is all it needs: no photo decoding libraries in this process
    pixels = np.random.default_rng(0).uniform(-1, 1, (batch, 3, pre.height, pre.width)).astype(np.float32)
    R.build(spec, folder, manifest, weights, threads).run(pixels)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main(sys.argv[1:])
