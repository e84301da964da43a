"""The export flow: reference model -> typed ONNX artifacts -> gates -> manifest, all or nothing.

Everything is written into a hidden temporary folder beside the destination; only when every
artifact has passed its checks and gates is that folder renamed into place. A failure or Ctrl-C
removes the temporary folder, so no half-written artifact folder ever exists.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx

from ijepa_deploy.reference_model import LoadedCheckpoint
from ijepa_deploy.runtime.manifest import Manifest
from ijepa_deploy.runtime.preprocessing import Preprocessor, expand_inputs

from . import report
from .onnx_graph import INPUT_NAME, PRECISIONS, GraphSpec, build_graph
from .progress import say, stage
from .trtexec_script import write_build_script
from .validation import Case, ReferenceOutputs, random_cases, validate_onnx

KNOWN_PRECISIONS = ("fp32", "fp16", "int8", "int8-cpu")
MIN_OPSET, MAX_OPSET = 17, 21


class ExportError(RuntimeError):
    """The export cannot proceed (bad options, unwritable folder, failed check)."""


@dataclass
class ExportOptions:
    precisions: tuple[str, ...] = ("fp32",)
    max_batch: int = 8
    opt_batch: int | None = None
    resolution: tuple[int, int] | None = None  # None: dynamic height and width
    opset: int = 17
    output_dir: Path = Path("engines")
    name: str | None = None
    overwrite: bool = False
    calib_images: Path | None = None
    calib_count: int = 32
    calib_method: str = "minmax"
    eval_images: Path | None = None
    eval_count: int = 8
    extra_steps: list = field(default_factory=list)  # callables(folder, manifest) run before the rename


def parse_resolution(text: str) -> tuple[int, int] | None:
    """'dynamic' -> None; 'HxW' or 'S' -> (H, W)."""
    text = text.strip().lower()
    if text == "dynamic":
        return None
    try:
        parts = [int(p) for p in text.split("x")]
    except ValueError:
        raise ExportError(f"--resolution must be 'dynamic' or HxW like 224x224, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise ExportError(f"--resolution must be 'dynamic' or HxW like 224x224, got {text!r}")
    return parts[0], parts[1]


def check_options(loaded: LoadedCheckpoint, options: ExportOptions) -> None:
    arch = loaded.architecture
    unknown = [p for p in options.precisions if p not in KNOWN_PRECISIONS]
    if unknown or not options.precisions:
        raise ExportError(f"unknown precision {unknown or '(none)'}; choose from {', '.join(KNOWN_PRECISIONS)}")
    if options.resolution is not None:
        h, w = options.resolution
        if h % arch.patch_size or w % arch.patch_size:
            raise ExportError(f"resolution {h}x{w} is not a multiple of the patch size {arch.patch_size}; "
                              f"try {h // arch.patch_size * arch.patch_size}x{w // arch.patch_size * arch.patch_size}")
    if options.max_batch < 1:
        raise ExportError(f"--max-batch must be >= 1, got {options.max_batch}")
    if options.opt_batch is not None and not 1 <= options.opt_batch <= options.max_batch:
        raise ExportError(f"--opt-batch must be between 1 and --max-batch ({options.max_batch})")
    if not MIN_OPSET <= options.opset <= MAX_OPSET:
        raise ExportError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET} (LayerNormalization needs 17)")
    if any(p.startswith("int8") for p in options.precisions) and options.calib_images is None:
        raise ExportError("int8 needs calibration images: pass --calib-images DIR (a few hundred real photos for "
                          "production, a few dozen for a smoke test)")
    for flag, folder in (("--calib-images", options.calib_images), ("--eval-images", options.eval_images)):
        if folder is not None and not Path(folder).is_dir():
            raise ExportError(f"{flag} folder not found: {folder}")


def export(loaded: LoadedCheckpoint, options: ExportOptions) -> Path:
    """Export `loaded` as validated artifacts into `output_dir/<name>/` and return that folder."""
    check_options(loaded, options)
    name = options.name or loaded.name
    output_dir = Path(options.output_dir)
    final = output_dir / name
    if final.exists() and not options.overwrite:
        raise ExportError(f"{final} already exists; pass --overwrite to replace it or --name to export beside it")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=output_dir))
    except OSError as exc:
        raise ExportError(f"output folder {output_dir} is not writable ({exc.strerror or exc}); "
                          "choose another with --output-dir") from None
    try:
        manifest = _export_into(work, loaded, options, name)
        for step in options.extra_steps:
            step(work, manifest)
        write_build_script(work, manifest)
        manifest.save(work)
        (work / "report.md").write_text(report.render(manifest))
        _normal_permissions(work)
        _move_into_place(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    say(f"artifacts ready: {final}")
    return final


def _export_into(work: Path, loaded: LoadedCheckpoint, options: ExportOptions, name: str) -> Manifest:
    arch = loaded.architecture
    native = (loaded.preprocessing.height, loaded.preprocessing.width)
    size = options.resolution or native
    manifest = _new_manifest(loaded, options, name, size)
    reference = ReferenceOutputs(loaded.model)

    with stage("fp32 ONNX: build"):
        fp32 = build_graph(loaded.model, GraphSpec(PRECISIONS["fp32"], options.resolution, options.opset),
                           work / "model_fp32.onnx")
    check_onnx(fp32)
    with stage("fp32 ONNX: parity gate vs PyTorch"):
        validation = validate_onnx(fp32, "fp32", random_cases(_fp32_shapes(arch, options, size)), reference)
    manifest.artifacts["fp32"] = _artifact_entry(fp32, "fp32", validation, options.opset)
    say(f"  fp32: worst cosine {validation['worst_cosine']:.7f}, worst max abs {validation['worst_max_abs']:.2e}")

    calib, held_out = _image_split(options)
    preprocessor = Preprocessor(manifest.preprocessing, size)
    eval_cases = _image_cases(held_out, preprocessor, options.max_batch) or random_cases([(min(4, options.max_batch), *size)])

    if "fp16" in options.precisions:
        from .precision import export_fp16

        path, validation = export_fp16(loaded.model, work, options, eval_cases, reference)
        manifest.artifacts["fp16"] = _artifact_entry(path, "fp16", validation, options.opset)
    for precision in (p for p in options.precisions if p.startswith("int8")):
        from .quantization import RECIPES, export_int8

        path, validation, calib_info = export_int8(loaded.model, work, options, calib, preprocessor, eval_cases,
                                                   reference, RECIPES[precision])
        manifest.artifacts[precision] = _artifact_entry(path, precision, validation, options.opset,
                                                        calibration=calib_info)
    return manifest


def check_onnx(path: Path) -> None:
    """onnx.checker with the file path (external data) and full shape/type inference."""
    with stage(f"onnx.checker full check: {path.name}"):
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise ExportError(f"{path.name} fails onnx.checker: {str(exc).splitlines()[0][:300]}") from None


def _fp32_shapes(arch, options: ExportOptions, size: tuple[int, int]) -> list[tuple[int, int, int]]:
    batches = sorted({b for b in (1, 3, options.max_batch) if b <= options.max_batch})
    shapes = [(b, *size) for b in batches]
    if options.resolution is None:
        p, g = arch.patch_size, arch.grid_size
        small = min(2, options.max_batch)
        shapes += [(small, (g + 2) * p, (g + 2) * p), (small, max(1, g - 2) * p, (g + 6) * p)]
    return shapes


def _image_split(options: ExportOptions) -> tuple[list[Path], list[Path]]:
    calib = expand_inputs([options.calib_images]) if options.calib_images else []
    held_out: list[Path] = []
    if options.eval_images:
        held_out = expand_inputs([options.eval_images])[: options.eval_count]
    elif calib:
        held_out = calib[options.calib_count: options.calib_count + options.eval_count]
    calib = calib[: options.calib_count]
    overlap = {p.resolve() for p in calib} & {p.resolve() for p in held_out}
    if overlap:
        raise ExportError(f"--eval-images overlaps the calibration images ({sorted(overlap)[0].name}, ...); "
                          "held-out images must be different")
    if any(p.startswith("int8") for p in options.precisions) and not held_out:
        raise ExportError(f"no held-out images for the int8 gate: --calib-images has {len(calib)} images and all are "
                          "used for calibration; lower --calib-count or pass --eval-images DIR")
    return calib, held_out


def _image_cases(paths: list[Path], preprocessor: Preprocessor, max_batch: int) -> list[Case]:
    cases = []
    for start in range(0, len(paths), max_batch):
        chunk = paths[start:start + max_batch]
        cases.append(Case(preprocessor(chunk), "images: " + ", ".join(p.name for p in chunk)))
    return cases


def file_record(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return {"path": path.name, "sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def _artifact_entry(path: Path, precision: str, validation: dict, opset: int, **extra) -> dict:
    data = path.with_name(path.name + ".data")
    files = [file_record(path)] + ([file_record(data)] if data.exists() else [])
    return {"file": path.name, "data_file": data.name if data.exists() else None, "precision": precision,
            "opset": opset, "files": files, "bytes": sum(f["bytes"] for f in files), "validation": validation, **extra}


def _new_manifest(loaded: LoadedCheckpoint, options: ExportOptions, name: str, size: tuple[int, int]) -> Manifest:
    arch = loaded.architecture
    p = arch.patch_size
    dynamic = options.resolution is None
    h, w = ("height", "width") if dynamic else size
    tokens = "tokens" if dynamic else (size[0] // p) * (size[1] // p)
    outputs = [{"name": "last_hidden_state", "dtype": "float32", "shape": ["batch", tokens, arch.hidden_size]},
               {"name": "embedding", "dtype": "float32", "shape": ["batch", arch.hidden_size]}]
    if arch.num_labels:
        outputs.append({"name": "logits", "dtype": "float32", "shape": ["batch", arch.num_labels]})
    native = [arch.image_size, arch.image_size]

    def snap(x: float) -> int:
        return max(p, int(round(x / p)) * p)

    resolution = {"dynamic": dynamic, "native": native, "multiple_of": p,
                  "min": [snap(size[0] / 2), snap(size[1] / 2)] if dynamic else list(size),
                  "max": [snap(size[0] * 2), snap(size[1] * 2)] if dynamic else list(size)}
    pre = loaded.preprocessing
    preprocessing = {"height": size[0], "width": size[1], "resample": pre.resample,
                     "rescale_factor": pre.rescale_factor, "mean": list(pre.mean), "std": list(pre.std),
                     "channel_order": pre.channel_order, "layout": pre.layout}
    opt = options.opt_batch or options.max_batch
    return Manifest(
        name=name, variant=loaded.source.get("variant"), encoder=loaded.source.get("encoder"),
        architecture=arch.to_dict(), checkpoint=loaded.source, preprocessing=preprocessing,
        io={"inputs": [{"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", arch.num_channels, h, w]}],
            "outputs": outputs},
        batch={"min": 1, "opt": opt, "max": options.max_batch}, resolution=resolution,
        labels={str(k): v for k, v in loaded.id2label.items()} if loaded.id2label else None,
        tools=tool_versions(), created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def tool_versions() -> dict:
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("ijepa-deploy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    versions.setdefault("onnxruntime", versions.get("onnxruntime-gpu", "missing"))
    return versions


def _normal_permissions(folder: Path) -> None:
    """mkdtemp makes 0700 and ONNX Runtime's quantizer writes 0600 data files: give everything the
    umask's normal permissions so the folder can be deployed to another user (Triton, a service)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod((0o777 if os.access(path, os.X_OK) else 0o666) & ~umask)


def _move_into_place(work: Path, final: Path) -> None:
    if not final.exists():
        os.replace(work, final)
        return
    trash = final.with_name(f".{final.name}.replaced-{os.getpid()}")
    os.replace(final, trash)
    os.replace(work, final)
    shutil.rmtree(trash, ignore_errors=True)
