"""The wheel: namespaced packages only, and the runtime imports in a fresh virtual environment."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_in_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(dist.glob("ijepa_deploy-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.startswith("ijepa_deploy-")}
    assert top == {"ijepa_deploy"}  # no bare runtime/, exporter/ or ray/ in site-packages
    for module in ("contract/manifest.schema.json", "ray/__init__.py", "bench/suite.py", "collection/index.py",
                   "runtime/backends/openvino_backend.py", "cli/embed.py"):
        assert f"ijepa_deploy/{module}" in names
    assert not any("/tests/" in n for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(wheel)], check=True, capture_output=True)
    out = subprocess.run([str(py), "-c", "import sys, ijepa_deploy.runtime as r; "
                          "print(r.Embedder.__name__, 'torch' in sys.modules, 'pyarrow' in sys.modules)"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Embedder", "False", "False"]  # the runtime brings neither torch nor pyarrow
    for script in ("ijepa-embed", "ijepa-index"):
        help_out = subprocess.run([str(venv / "bin" / script), "--help"], capture_output=True, text=True)
        assert help_out.returncode == 0 and "Usage" in help_out.stdout
    missing = subprocess.run([str(venv / "bin" / "ijepa-index"), "build", str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode == 1 and "error: " in missing.stderr and "Traceback" not in missing.stderr
