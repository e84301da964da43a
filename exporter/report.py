"""report.md: the human-readable summary of an artifact folder (sizes, gates, quantization, engines)."""

from __future__ import annotations

from ijepa_deploy.contract.canons import training_note
from ijepa_deploy.contract.manifest import CheckpointRecord, Manifest


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _checkpoint(source: CheckpointRecord) -> str:
    if source.kind == "random-init":
        return f"random-init ({source.variant}, seed {source.seed}; random weights, not a trained model)"
    return f"{source.kind} {source.location} (sha256 {source.sha256})"


def _fmt(value, spec: str = ".5f") -> str:
    return "-" if value is None else format(value, spec)


def render(manifest: Manifest) -> str:
    """report.md: the folder's description, then one section per kind of record."""
    lines = _header(manifest) + _artifacts(manifest) + _quantization(manifest) + _shape_checks(manifest)
    lines += _engines(manifest)
    lines += ["", "## Tools", "", ", ".join(f"{k} {v}" for k, v in manifest.tools.items()), ""]
    return "\n".join(lines)


def _header(manifest: Manifest) -> list[str]:
    a, res, pre = manifest.architecture, manifest.resolution, manifest.preprocessing
    return [
        f"# {manifest.name}",
        "",
        f"- Architecture: D={a.hidden_size}, {a.num_layers} layers, {a.num_heads} heads, MLP {a.mlp_size}, "
        f"patch {a.patch_size}, native {a.image_size}px" + (f", head with {a.num_labels} labels" if a.num_labels else ""),
        f"- Checkpoint: {_checkpoint(manifest.checkpoint)}" + (f", {manifest.encoder} encoder" if manifest.encoder else ""),
        f"- Resolution: {'dynamic' if res.dynamic else 'fixed'} (native {res.native[0]}x{res.native[1]}, "
        f"range {res.min[0]}x{res.min[1]} .. {res.max[0]}x{res.max[1]}, multiple of {res.multiple_of})",
        f"- Batch: {manifest.batch.min}..{manifest.batch.max} (opt {manifest.batch.opt}); pooling: mean over tokens",
        f"- Preprocessing ({pre.canon} canon): EXIF orientation {'applied' if pre.exif_orientation else 'ignored'}, "
        + (f"resize to {pre.height}x{pre.width}" if pre.crop_pct is None else
           f"shorter side to size / {pre.crop_pct:g}, center crop {pre.height}x{pre.width}")
        + f" ({pre.resample}), x{pre.rescale_factor:.6g}, mean {list(pre.mean)}, std {list(pre.std)}, "
        f"at most {pre.max_pixels:,} pixels per image",
    ] + ([f"- **Preprocessing note**: {note}."] if (note := training_note(manifest.checkpoint.kind, pre)) else [])


def _artifacts(manifest: Manifest) -> list[str]:
    lines = [
        "",
        "## Artifacts and gates",
        "",
        "Low precisions are certified on held-out real images against PyTorch fp32: centered cosine (worst image, "
        "the set's mean embedding removed), top-5 neighbour agreement, token centered cosine; pooled cosine and max "
        "abs are for information.",
        "",
        "| precision | file | size | gate | centered cos | top-5 agree | token centered | pooled cos | max abs | quantized FLOPs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for prec, art in manifest.artifacts.items():
        v = art.validation
        m = v.metrics or {}
        gate = ", ".join(f"{k.replace('min_', '').replace('max_', 'max ')} {val:g}" for k, val in v.gate.items()
                         if k != "k") or "reported"
        fraction = art.quantization.quantized_flop_fraction if art.quantization else None
        lines.append(
            f"| {prec} | {art.file}{' (' + art.inference_precision + ' mode)' if art.inference_precision else ''} | "
            f"{_mb(art.bytes)} | {gate} | {_fmt(m.get('centered_cosine'))} | {_fmt(m.get('top5_agreement'), '.3f')} | "
            f"{_fmt(m.get('token_centered_cosine'))} | {_fmt(m.get('pooled_cosine', v.worst_cosine), '.6f')} | "
            f"{_fmt(m.get('max_abs', v.worst_max_abs), '.2e')} | {_fmt(fraction, '.1%')} |")
    weak = [p for p, art in manifest.artifacts.items() if art.validation.weak_estimate]
    if weak:
        lines += ["", f"Fewer than 16 held-out images were used for {', '.join(weak)}: the neighbour agreement is "
                      "weakly estimated."]
    return lines


def _quantization(manifest: Manifest) -> list[str]:
    lines = []
    quantized = {p: art for p, art in manifest.artifacts.items() if art.quantization}
    if quantized:
        lines += ["", "## Quantization", ""]
        for prec, art in quantized.items():
            q = art.quantization
            floats = q.float_layers
            lines.append(f"- {prec}: {q.activations} activations, {q.weights} weights; SmoothQuant alpha "
                         f"{q.smoothquant_alpha}; {q.quantized_layers} MatMuls quantized"
                         + (f", {len(floats)} kept float ({', '.join(floats[:6])}{', ...' if len(floats) > 6 else ''})"
                            if floats else "") + f"; calibration {art.calibration.method} on "
                         f"{art.calibration.count} images; {len(q.attempts)} attempt(s)")
    return lines


def _shape_checks(manifest: Manifest) -> list[str]:
    lines = []
    shape_checks = [(p, c) for p, art in manifest.artifacts.items() for c in art.validation.checks or ()]
    if shape_checks:
        lines += ["", "## fp32 parity checks", "", "| batch | HxW | inputs | cosine | max abs |", "|---|---|---|---|---|"]
        for _, c in shape_checks:
            lines.append(f"| {c['batch']} | {c['height']}x{c['width']} | {c['inputs']} | {c['min_cosine']:.7f} | "
                         f"{c['max_abs']:.2e} |")
    return lines


def _engines(manifest: Manifest) -> list[str]:
    lines = []
    if manifest.engines:
        lines += ["", "## TensorRT engines", ""]
        for eng in manifest.engines:
            lines.append(f"- {eng.precision}: {eng.file} (TensorRT {eng.tensorrt_version}, {eng.gpu_name}, "
                         f"sm_{eng.compute_capability.replace('.', '')}"
                         + (", version compatible" if eng.version_compatible else "") + f"), {_mb(eng.bytes)}")
    return lines
