"""The runtime inside other processes: a used Embedder in a forked child (gunicorn --preload,
multiprocessing with fork) works and exits normally, on every CPU backend, and never hangs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ijepa_deploy.runtime.backends.openvino_backend import openvino_unavailable_reason

BACKENDS = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    openvino_unavailable_reason() is not None, reason=f"OpenVINO backend: {openvino_unavailable_reason()}"))]

FORK = """
import os, sys
import numpy as np
from ijepa_deploy.runtime import Embedder
embedder = Embedder.load(sys.argv[1], backend=sys.argv[2])
image = sys.argv[3]
before = embedder.embed([image])
pid = os.fork()
if pid == 0:  # the child uses the parent's embedder, then exits the normal way (atexit, destructors)
    same = np.allclose(embedder.embed([image, image]), np.concatenate([before, before]), atol=1e-5)
    sys.exit(0 if same else 3)
_, status = os.waitpid(pid, 0)
after = embedder.embed([image])
print(os.waitstatus_to_exitcode(status), bool(np.allclose(before, after, atol=1e-6)))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_used_embedder_works_in_a_forked_child(tiny_fp32, photos, backend):
    image = str(sorted(photos["eval"].iterdir())[0])
    done = subprocess.run([sys.executable, "-c", FORK, str(tiny_fp32), backend, image], capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0", "True"]  # the child embedded right and exited 0; the parent still works
