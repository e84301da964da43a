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
    assert top == {"ijepa_deploy"}  # no bare runtime/ or exporter/ in site-packages
    assert "ijepa_deploy/runtime/manifest.schema.json" in names
    assert not any("/tests/" in n for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(wheel)], check=True, capture_output=True)
    out = subprocess.run([str(py), "-c", "import sys, ijepa_deploy.runtime as r; "
                          "print(r.Embedder.__name__, 'torch' in sys.modules)"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Embedder", "False"]
    help_out = subprocess.run([str(venv / "bin" / "ijepa-embed"), "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0 and "--artifacts" in help_out.stdout
