"""report.md: the human-readable summary of an artifact folder (sizes, gates, engines)."""

from __future__ import annotations

from ijepa_deploy.runtime.manifest import Manifest


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _checkpoint(source: dict) -> str:
    if source.get("kind") == "random-init":
        return f"random-init ({source.get('variant')}, seed {source.get('seed')}; random weights, not a trained model)"
    return f"{source.get('kind')} {source.get('location')} (sha256 {source.get('sha256')})"


def render(manifest: Manifest) -> str:
    a = manifest.architecture
    res = manifest.resolution
    lines = [
        f"# {manifest.name}",
        "",
        f"- Architecture: D={a['hidden_size']}, {a['num_layers']} layers, {a['num_heads']} heads, MLP {a['mlp_size']}, "
        f"patch {a['patch_size']}, native {a['image_size']}px" + (f", head with {a['num_labels']} labels" if a["num_labels"] else ""),
        f"- Checkpoint: {_checkpoint(manifest.checkpoint)}" + (f", {manifest.encoder} encoder" if manifest.encoder else ""),
        f"- Resolution: {'dynamic' if res['dynamic'] else 'fixed'} (native {res['native'][0]}x{res['native'][1]}, "
        f"range {res['min'][0]}x{res['min'][1]} .. {res['max'][0]}x{res['max'][1]}, multiple of {res['multiple_of']})",
        f"- Batch: {manifest.batch['min']}..{manifest.batch['max']} (opt {manifest.batch['opt']}); pooling: mean over tokens",
        f"- Preprocessing: resize to {manifest.preprocessing['height']}x{manifest.preprocessing['width']} "
        f"({manifest.preprocessing['resample']}), x{manifest.preprocessing['rescale_factor']:.6g}, "
        f"mean {manifest.preprocessing['mean']}, std {manifest.preprocessing['std']}",
        "",
        "## Artifacts",
        "",
        "| precision | file | size | gate | worst cosine | worst max abs | passed |",
        "|---|---|---|---|---|---|---|",
    ]
    for prec, art in manifest.artifacts.items():
        v = art["validation"]
        gate = f"cos >= {v['gate']['min_cosine']}" + (f", max abs <= {v['gate']['max_abs']:g}" if v["gate"]["max_abs"] else "")
        lines.append(f"| {prec} | {art['file']} | {_mb(art['bytes'])} | {gate} | {v['worst_cosine']:.6f} | "
                     f"{v['worst_max_abs']:.2e} | {'yes' if v['passed'] else 'NO'} |")
    lines += ["", "## Checks", "", "| precision | batch | HxW | inputs | cosine | max abs |", "|---|---|---|---|---|---|"]
    for prec, art in manifest.artifacts.items():
        for c in art["validation"]["checks"]:
            inputs = c["inputs"] if len(c["inputs"]) < 60 else c["inputs"][:57] + "..."
            lines.append(f"| {prec} | {c['batch']} | {c['height']}x{c['width']} | {inputs} | "
                         f"{c['min_cosine']:.7f} | {c['max_abs']:.2e} |")
    if manifest.engines:
        lines += ["", "## TensorRT engines", ""]
        for prec, eng in manifest.engines.items():
            if "skipped" in eng:
                lines.append(f"- {prec}: skipped: {eng['skipped']}")
            else:
                lines.append(f"- {prec}: {eng['file']} (TensorRT {eng['tensorrt_version']}, {eng['gpu_name']}, "
                             f"sm_{eng['compute_capability'].replace('.', '')}), {_mb(eng['bytes'])}")
    lines += ["", "## Tools", "", ", ".join(f"{k} {v}" for k, v in manifest.tools.items()), ""]
    return "\n".join(lines)
