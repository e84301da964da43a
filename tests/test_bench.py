"""ijepa-bench on a tiny artifact: every figure the JSON promises is there (no timed assertions)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ijepa_deploy.exporter.bench import BASELINE, main


def test_bench_json_has_every_figure(tiny_artifacts, tmp_path):
    out = CliRunner().invoke(main, ["--artifacts", str(tiny_artifacts), "--backends", "torch,onnxruntime",
                                    "--precision", "fp32,fp16,int8", "--batch-sizes", "1,3", "--iters", "2",
                                    "--export-variant", "test-tiny-p14", "--json", str(tmp_path / "b.json"),
                                    "--markdown", str(tmp_path / "b.md")])
    assert out.exit_code == 0, out.output
    result = json.loads((tmp_path / "b.json").read_text())
    assert {"cpu", "cores", "onnxruntime", "torch"} <= set(result["machine"])
    assert result["roofline"]["fp32_matmul_gflops"] > 0 and result["roofline"]["int8_matmulinteger_gops"] > 0
    backends = {r["backend"] for r in result["models"]}
    assert backends == {BASELINE, "torch reference fp32", "onnxruntime fp32", "onnxruntime fp16", "onnxruntime int8"}
    for row in result["models"]:
        assert row["images_per_s"] > 0 and row["latency_p95_ms"] >= row["latency_p50_ms"] >= 0
        assert row["ratio_vs_transformers"] > 0 and 0 <= row["fraction_of_peak"]
        assert row["cosine_vs_transformers"] >= (0.99 if "int8" in row["backend"] else 0.999)
    assert set(result["peak_rss_mb"]) == {"torch:transformers", "torch:reference", "onnxruntime:fp32",
                                          "onnxruntime:fp16", "onnxruntime:int8"}
    assert all(mb > 50 for mb in result["peak_rss_mb"].values())  # a fresh Python process with the backend loaded
    for mode in ("from_files", "from_decoded"):
        pre = result["preprocessing"][mode]
        assert pre["max_abs_difference"] <= 1e-5 and pre["ours_images_per_s"] > 0 and pre["speedup"] > 0
    assert result["export"]["seconds"] > 0 and result["export"]["peak_rss_gb"] > 0
    assert "| onnxruntime int8 | 3 |" in (tmp_path / "b.md").read_text()
