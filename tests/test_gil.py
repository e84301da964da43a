"""The GIL is released while the runtime works: two host threads, each on its own Embedder with one
intra-op thread and one decode worker, embed in parallel on two cores.

Each thread calls `embed` once per batch of 4 photos (decode, resize, normalise, inference), as a host
serving requests does; one such caller keeps one core busy (a single `embed` over a long list already
overlaps decoding the next batch with inference, so it would use two cores by itself). If decode,
resize, normalisation or inference held the GIL, the two threads would take turns and the ratio would
stay near 1.0. The model is mid-sized (D=192, 4 blocks, 224 px, patch 16) so inference costs about as
much as decoding, like the real ones. Measured on the 2-core CI machine (other engineers' jobs
running beside it): ONNX Runtime 1.90x, OpenVINO 1.24x before this work (its threads were pinned to the
same core) and 1.76x after. Timing is the best of three interleaved repetitions, and this is the only
timed assertion in the suite. The machine is shared: while the ratio is short of 1.35x the measurement
is repeated (for up to PATIENCE_S seconds), and a GIL-free reference (hashlib over 32 MB, two threads vs
one) tells whether two cores were free at all; only when they never were is the test skipped, saying so.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from ijepa_deploy.runtime import Embedder
from ijepa_deploy.runtime.backends.openvino_backend import openvino_unavailable_reason

from .helpers import skimage_data_dir, threads_seconds

BACKENDS = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    openvino_unavailable_reason() is not None, reason=f"OpenVINO backend: {openvino_unavailable_reason()}"))]
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg",
          "astronaut.png", "coffee.png"]
MIN_RATIO = 1.35
FREE_CORES = 1.8  # a GIL-free reference this fast in two threads means two cores were free
PATIENCE_S = 150


def _work(embedder: Embedder, paths: list) -> None:
    for start in range(0, len(paths), 4):
        embedder.embed(paths[start:start + 4])


def measure(embedders: list[Embedder], paths: list, repeats: int = 3) -> tuple[float, float]:
    """(embedders, reference): throughput of two threads over one, 2 * t(one) / t(two doing twice the
    work), best of `repeats` interleaved repetitions. The reference is hashlib over 32 MB (it releases the
    GIL, as helpers.free_core_ratio): what the machine gives two GIL-free threads at the same moments."""
    data = bytes(32 << 20)
    one, two, ref_one, ref_two = [], [], [], []
    for _ in range(repeats):  # interleaved, so a burst of load from elsewhere hits all alike
        one.append(threads_seconds(_work, [(embedders[0], paths)]))
        two.append(threads_seconds(_work, [(e, paths) for e in embedders]))
        ref_one.append(threads_seconds(hashlib.sha256, [(data,)]))
        ref_two.append(threads_seconds(hashlib.sha256, [(data,), (data,)]))
    return 2 * min(one) / min(two), 2 * min(ref_one) / min(ref_two)


@pytest.mark.timeout(400)
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to run two threads in parallel")
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_host_threads_on_two_embedders_run_in_parallel(mid_fp32, backend):
    paths = [skimage_data_dir() / name for name in PHOTOS]
    embedders = [Embedder.load(mid_fp32, backend=backend, threads=1, workers=1) for _ in range(2)]
    ratio, reference, deadline = 0.0, 0.0, time.monotonic() + PATIENCE_S
    try:
        for e in embedders:
            _work(e, paths[:4])  # warm: sessions, compiled models, pools
        while ratio < MIN_RATIO and time.monotonic() < deadline:
            measured = measure(embedders, paths)
            ratio, reference = max(ratio, measured[0]), max(reference, measured[1])
    finally:
        for e in embedders:
            e.close()
    print(f"{backend}: two threads on two Embedders = {ratio:.2f}x one thread (GIL-free reference {reference:.2f}x)")
    if ratio < MIN_RATIO and reference < FREE_CORES:
        pytest.skip(f"two cores were never free in {PATIENCE_S} s (a GIL-free reference reached {reference:.2f}x, "
                    f"the embedders {ratio:.2f}x): other jobs are using this machine")
    assert ratio >= MIN_RATIO
