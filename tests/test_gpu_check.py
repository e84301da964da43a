"""scripts/gpu-check.sh and bench/gpu_check.py without a GPU: its pure parts, the one line it prints
where torch sees no CUDA device, and a dry run of its measuring code on the CPU with a tiny model,
importing `ijepa_deploy` from the checkout the way it does on a GPU machine (nothing installed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ijepa_deploy.bench.gpu_check import package_dirs, render_markdown
from ijepa_deploy.bench.gpu_sections import images_per_second, parity_verdict
from ijepa_deploy.contract.naming import gpu_slug

ROOT = Path(__file__).resolve().parents[1]


def test_package_dirs_follow_pyproject():
    dirs = package_dirs((ROOT / "pyproject.toml").read_text())
    assert dirs["ijepa_deploy.bench"] == "bench" and dirs["ijepa_deploy.runtime.backends"] == "runtime/backends"
    assert dirs["ijepa_deploy.ray"] == "collection/ray_alias" and all((ROOT / d).is_dir() for d in dirs.values())


def test_pure_parts():
    assert images_per_second([0.1, 0.3, 0.2], 8) == pytest.approx(40.0)
    assert images_per_second([0.1, 0.2], 1) == pytest.approx(1 / 0.15)
    assert parity_verdict("fp32", {"centered_cosine": 0.999995}) == "pass"
    assert parity_verdict("half", {"centered_cosine": 0.998}) == "below 0.999"
    assert gpu_slug("NVIDIA H200") == "nvidia-h200"  # the results' file names
    md = render_markdown({"created": "now", "seconds": 12.0, "gpu": {"name": "NVIDIA H200"},
                          "parity": {"model": "m", "images": 16, "inputs": "photographs", "rows": [
                              {"precision": "fp16", "centered_cosine": 0.9999, "top5_agreement": 1.0, "verdict": "pass"}]},
                          "baselines": {"model": "m", "resolution": 224, "rounds": 3, "rows": [
                              {"path": "transformers fp16 (SDPA)", "batch": 64, "images_per_s": 1500.0, "ms": 42.7}]},
                          "cuda_python": {"checks": {"graph captured": True}}, "tensorrt": {"summary": "not run: x"},
                          "skipped": ["TensorRT steps: x"]})
    assert "| fp16 | 0.999900 | 1.000 |" in md and "| transformers fp16 (SDPA) | 64 | 1500.0 | 42.70 |" in md
    assert "| graph captured | True |" in md and "- TensorRT steps: x" in md


def test_script_without_cuda_says_so_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: the script would measure it")
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh")], capture_output=True, text=True,
                         env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: ") and "sees no CUDA device" in lines[0]


def test_dry_run_on_cpu(tmp_path):
    """The measuring code end to end on the CPU (tiny model, short rounds), run as the script runs."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--variant",
                          "test-tiny-p14", "--images", "8", "--per-round", "0.02", "--out", str(tmp_path),
                          "--budget", "300"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "gpu-gpu.json").read_text())
    assert result["modules_from"] == str(ROOT)  # ijepa_deploy.* came from this checkout
    rows = {r["precision"]: r for r in result["parity"]["rows"]}
    assert set(rows) == {"fp32", "fp32+tf32", "fp16", "bf16"} and rows["fp32"]["centered_cosine"] > 0.99999
    paths = {(r["path"], r["batch"]) for r in result["baselines"]["rows"]}
    assert ("reference model bf16", 64) in paths and ("transformers fp16 (SDPA)", 1) in paths
    assert "a dry run on cpu: no GPU sections" in result["skipped"]
    assert (tmp_path / "gpu-gpu.md").read_text().startswith("# GPU check")
