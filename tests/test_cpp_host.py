"""The C++ host example (examples/cpp_host): built with the machine's compiler against pybind11 from the
registry, run against exported artifacts, checked against Python to 1e-5, with the parallelism of its
C++ threads reported.

The embedded interpreter uses this environment: the binary sets PyConfig.program_name to the venv's
python (IJEPA_HOST_PYTHON), so CPython finds the venv's pyvenv.cfg and site-packages (editable installs
included) as `python` itself would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ijepa_deploy.runtime import Embedder

from .helpers import free_core_ratio

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cpp_host"
COMPILER = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")
pytestmark = [pytest.mark.skipif(COMPILER is None, reason="no C++ compiler on this machine (c++, g++, clang++)"),
              pytest.mark.skipif(shutil.which("cmake") is None, reason="no cmake on this machine")]


@pytest.fixture(scope="module")
def host_binary(tmp_path_factory) -> Path:
    import pybind11

    build = tmp_path_factory.mktemp("cpp_host_build")
    configure = subprocess.run(["cmake", "-S", str(EXAMPLE), "-B", str(build), f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
                                f"-DPython_EXECUTABLE={sys.executable}", f"-DCMAKE_CXX_COMPILER={COMPILER}"],
                               capture_output=True, text=True, timeout=300)
    assert configure.returncode == 0, configure.stdout[-3000:] + configure.stderr[-3000:]
    built = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return build / "ijepa_host"


def run_host(binary: Path, artifacts: Path, threads: int, frames: int, out: Path | None = None) -> dict:
    args = [str(binary), str(artifacts), str(threads), str(frames)] + ([str(out)] if out else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "IJEPA_HOST_PYTHON": sys.executable})
    assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    assert done.stderr == "", done.stderr[-2000:]  # the runtime printed nothing into the host's stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _frames(count: int) -> np.ndarray:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from host_driver import frames
    finally:
        sys.path.remove(str(EXAMPLE))
    return frames(count, 240, 320, 0)


@pytest.mark.timeout(900)
def test_the_cpp_host_agrees_with_python(host_binary, tiny_fp32, tmp_path):
    out = tmp_path / "rows.f32"
    report = run_host(host_binary, tiny_fp32, threads=3, frames=5, out=out)  # 5: a partial last batch
    assert report["max_abs_vs_python"] <= 1e-5  # checked by the host itself, row by row
    rows = np.fromfile(out, dtype=np.float32).reshape(15, -1)
    with Embedder.load(tiny_fp32, backend="onnxruntime") as embedder:
        expected = embedder.embed(_frames(15))  # and here, independently, from Python
    assert np.abs(rows - expected).max() <= 1e-5


@pytest.mark.timeout(900)
def test_cpp_threads_embed_in_parallel(host_binary, mid_fp32):
    """Reported, bounded only generously (see test_gil for the strict Python one). The machine is shared:
    the run is repeated for up to two minutes while the ratio is short of the bound, and the test is skipped,
    saying so, only when a GIL-free reference shows that two cores were never free meanwhile."""
    best, reference, deadline = None, 0.0, time.monotonic() + 120
    while time.monotonic() < deadline:
        report = run_host(host_binary, mid_fp32, threads=2, frames=16)
        assert report["max_abs_vs_python"] <= 1e-5
        best = report if best is None or report["parallel_ratio"] > best["parallel_ratio"] else best
        if best["parallel_ratio"] > 1.2:
            break
        reference = max(reference, free_core_ratio())
    print(f"C++ host, 2 threads on 2 Embedders: {best['parallel_ratio']:.2f}x one thread ({best})")
    if best["parallel_ratio"] <= 1.2 and reference < 1.8:
        pytest.skip(f"two cores were never free (GIL-free reference {reference:.2f}x, C++ threads "
                    f"{best['parallel_ratio']:.2f}x): other jobs are using this machine")
    assert best["parallel_ratio"] > 1.2
