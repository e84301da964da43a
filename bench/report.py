"""The benchmark's markdown: the machine, then one table per batch size, then the other measurements."""

from __future__ import annotations


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# ijepa-bench: {result['artifacts']} ({result['created']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores ({m.get('cpu_flags', '')}), {m['memory_gb']} GB RAM"
             + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU") + f"; {m['os']}",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in m.items()
                                     if k not in ("cpu", "cores", "memory_gb", "gpu", "os", "cpu_flags")),
             f"Model: {result['model']} at {result['resolution'][0]}x{result['resolution'][1]}, "
             f"{result['gflop_per_image']:.3g} GFLOP/image; warmup {result['warmup']}, {result['iters']} interleaved "
             f"iterations (A B C A B C ...), median; command: `{result['command']}`", ""]
    if result.get("roofline"):
        r = result["roofline"]
        lines += [f"Measured peaks ({r['shape'][0]}x{r['shape'][1]}x{r['shape'][2]}, best of 5): fp32 MatMul "
                  f"{r['fp32_gops']} GFLOP/s, int8 MatMulInteger {r['int8_gops']} GOP/s"
                  + (f", bf16 matmul (torch) {r['bf16_gops']} GFLOP/s" if r.get("bf16_gops") else ""), ""]
    memory = result.get("peak_rss_mb") or {}
    for batch in sorted({row["batch"] for row in result["models"]}):
        rows = [row for row in result["models"] if row["batch"] == batch]
        lines += [f"## batch {batch}", "",
                  "| path | role | computes in | images/s | p50 ms | x transformers | x best peer | "
                  "centered cos vs fp32 | % of peak | peak RSS MB |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in sorted(rows, key=lambda r: ({"baseline": 0, "peer": 1, "ours": 2}[r["role"]], -r["images_per_s"])):
            frac = f"{100 * row['fraction_of_peak']:.0f}%" if row.get("fraction_of_peak") is not None else "-"
            lines.append(f"| {row['backend']} | {row['role']} | {row['precision']} | {row['images_per_s']:.2f} | "
                         f"{row['latency_p50_ms']:.0f} | {_fmt(row['ratio_vs_transformers'], '.2f')} | "
                         f"{_fmt(row.get('ratio_vs_best_peer'), '.2f')} | "
                         f"{_fmt(row.get('centered_cosine_vs_baseline'), '.4f')} | {frac} | {memory.get(row['spec'], '-')} |")
        best = max(rows, key=lambda r: r["images_per_s"])
        lines += ["", f"Best observed at batch {batch}: {best['backend']} ({best['images_per_s']:.2f} images/s)."
                      + (f" Best peer: {result['best_peer'][str(batch)]}." if result.get("best_peer") else ""), ""]
    if memory:
        lines += [f"Peak RSS: a fresh process that loads that path alone and runs one batch of {result['memory_batch']}.",
                  ""]
    if result.get("preprocessing"):
        p = result["preprocessing"]
        lines += [f"Preprocessing, {p['images']} photos -> {p['size'][0]}x{p['size'][1]} (identical output required):", "",
                  "| input | ours images/s | ViTImageProcessor images/s | speed-up | max abs difference |",
                  "|---|---|---|---|---|"]
        for label in ("from_files", "from_decoded"):
            q = p[label]
            lines.append(f"| {label.replace('_', ' ')} | {q['ours_images_per_s']} | {q['vit_image_processor_images_per_s']} | "
                         f"{q['speedup']}x | {q['max_abs_difference']:.1e} |")
        lines.append("")
    if result.get("collection"):
        c = result["collection"]
        lines += [f"Collections: {c['images']} images, {c['path']}, interleaved: in-memory `Embedder.embed` "
                  f"{c['in_memory_images_per_s']} images/s, sharded `--output-dir` (shard size {c['shard_size']}) "
                  f"{c['sharded_images_per_s']} images/s ({c['sharded_vs_in_memory']:.3f}x). Sharded RSS at 25/50/75/100 % "
                  f"of the run: {', '.join(str(v) for v in c['sharded_rss_mb'])} MB.", ""]
    if result.get("export"):
        e = result["export"]
        lines += [f"Export: `{e['command']}` took {e['seconds']} s, peak RSS {e['peak_rss_gb']} GB.", ""]
    return "\n".join(lines)
