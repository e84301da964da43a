"""ijepa-bench on a tiny artifact: every figure the JSON promises is there (no timed assertions)."""

from __future__ import annotations

import json

from ijepa_deploy.bench.runners import BASELINE
from ijepa_deploy.runtime.backends.openvino_backend import openvino_unavailable_reason

from .helpers import run_module


def test_bench_json_has_every_figure(tiny_artifacts, photos, tmp_path):
    out = run_module("bench", "--artifacts", str(tiny_artifacts), "--precision", "fp32,int8,int8-cpu",
                     "--batch-sizes", "1,4", "--iters", "2", "--export-variant", "test-tiny-p14", "--collection",
                     str(photos["eval"]), "--json", str(tmp_path / "b.json"), "--markdown", str(tmp_path / "b.md"))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "b.json").read_text())
    assert {"cpu", "cores", "cpu_flags", "onnxruntime", "torch"} <= set(result["machine"])
    assert result["roofline"]["fp32_gops"] > 0 and result["roofline"]["int8_gops"] > 0
    rows = result["models"]
    roles = {r["role"] for r in rows}
    assert roles == {"baseline", "peer", "ours"}
    assert [r["backend"] for r in rows if r["role"] == "baseline"] == [BASELINE, BASELINE]  # SDPA, as from_pretrained
    names = {r["backend"] for r in rows}
    assert "torch bf16 autocast" in names
    assert any(n.startswith("ours: onnxruntime") and n.endswith("int8-cpu") for n in names)
    if openvino_unavailable_reason() is None:
        assert any(n.startswith("OpenVINO on model_int8.onnx (default") for n in names)
        assert any(n.startswith("ours: openvino") for n in names)
    for row in rows:
        assert row["images_per_s"] > 0 and row["latency_p95_ms"] >= row["latency_p50_ms"] >= 0
        assert row["ratio_vs_transformers"] > 0 and row["ratio_vs_best_peer"] > 0
        assert row["fraction_of_peak"] >= 0  # tiny models use a sliver of the peak
        if row["batch"] == 4:
            assert row["centered_cosine_vs_baseline"] >= (0.98 if "int8" in row["precision"] or row["role"] == "peer"
                                                          else 0.999)
    assert set(result["best_peer"]) == {"1", "4"}
    assert set(result["peak_rss_mb"]) == {r["spec"] for r in rows if r["batch"] == 4}
    assert all(mb > 50 for mb in result["peak_rss_mb"].values())  # a fresh process with the path loaded
    for mode in ("from_files", "from_decoded"):
        pre = result["preprocessing"][mode]
        assert pre["max_abs_difference"] <= 1e-5 and pre["ours_images_per_s"] > 0 and pre["speedup"] > 0
    assert result["export"]["seconds"] > 0 and result["export"]["peak_rss_gb"] > 0
    collection = result["collection"]
    assert collection["images"] == 18 and collection["sharded_images_per_s"] > 0 and len(collection["sharded_rss_mb"]) == 4
    text = (tmp_path / "b.md").read_text()
    assert "## batch 4" in text and "x best peer" in text and "Collections:" in text
