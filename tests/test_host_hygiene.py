"""Library etiquette inside a host process: importing and using the runtime installs no signal handler,
configures no logging, changes no hook, prints nothing (not even from the engines' native code, checked
at the file-descriptor level in a fresh interpreter) and never exits; `Embedder.info()` says what it is."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ijepa_deploy.runtime import Embedder
from ijepa_deploy.runtime.backends.openvino_backend import openvino_unavailable_reason

BACKENDS = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    openvino_unavailable_reason() is not None, reason=f"OpenVINO backend: {openvino_unavailable_reason()}"))]

HOST = """
import json, logging, signal, sys, threading
def state():
    return {"signals": {str(s): repr(signal.getsignal(s)) for s in signal.valid_signals()
                        if signal.getsignal(s) is not None},
            "root_handlers": [repr(h) for h in logging.root.handlers], "root_level": logging.root.level,
            "last_resort": repr(logging.lastResort), "excepthook": sys.excepthook is sys.__excepthook__,
            "threading_excepthook": threading.excepthook is threading.__excepthook__,
            "loggers_with_handlers": sorted(n for n, l in logging.root.manager.loggerDict.items()
                                            if getattr(l, "handlers", None))}
before = state()
import numpy as np
from ijepa_deploy.runtime import Embedder
with Embedder.load(sys.argv[1], backend=sys.argv[2]) as embedder:
    vectors = embedder.embed([sys.argv[3], np.zeros((70, 90, 3), np.uint8)])
    embedder.embed(np.zeros((2, 70, 90, 3), np.uint8))
    embedder.embed_pixels(embedder.preprocess(sys.argv[3]))
    info = embedder.info()
after = state()
with open(sys.argv[4], "w") as fh:
    json.dump({"before": before, "after": after, "rows": len(vectors), "info": info}, fh)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_runtime_leaves_the_host_alone(tiny_fp32, photos, backend, tmp_path):
    image = str(sorted(photos["eval"].iterdir())[0])
    result = tmp_path / "result.json"
    done = subprocess.run([sys.executable, "-c", HOST, str(tiny_fp32), backend, image, str(result)],
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "" and done.stderr == ""  # nothing printed, by Python or native code
    data = json.loads(result.read_text())
    assert data["rows"] == 2
    assert data["after"] == data["before"]  # signals, logging, hooks untouched
    assert data["info"]["backend"] == backend


def test_info_says_what_the_embedder_is(tiny_fp32):
    with Embedder.load(tiny_fp32, backend="onnxruntime", threads=1) as embedder:
        info = embedder.info()
    for key in ("runtime_version", "backend", "backend_detail", "engine_version", "device", "providers", "precision",
                "compute_precision", "identity", "artifact", "preprocessing", "versions", "threads", "workers"):
        assert key in info, key
    assert info["identity"].startswith("sha256:") and info["precision"] == "fp32" and info["device"] == "cpu"
    assert info["engine_version"] == info["versions"]["onnxruntime"] and info["providers"] == ["CPUExecutionProvider"]
    assert info["preprocessing"]["canon"] == "hf" and info["threads"] == 1
    json.dumps(info)  # plain JSON for a host's logs
