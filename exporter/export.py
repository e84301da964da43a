"""The export flow: reference model -> typed ONNX artifacts -> gates -> manifest, all or nothing.

The flow loops over the precision registry's records; each kind of record has one step (a graph,
a runtime mode of another artifact, a quantized graph). Everything is written into a hidden
temporary folder beside the destination, named after this process, while a lock keeps a second
export of the same name out; only when every artifact has passed its checks and gates is the
folder renamed into place (never over an existing folder without `overwrite`). A failure, Ctrl-C
or SIGTERM removes the temporary folder; one left by a killed process (SIGKILL) is removed by the
next export into the same folder.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from ijepa_deploy.reference_model import LoadedCheckpoint
from ijepa_deploy.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from ijepa_deploy.runtime.integrity import is_plain_name, sha256_file
from ijepa_deploy.runtime.manifest import Artifact, FileRecord, Manifest
from ijepa_deploy.runtime.preprocessing import Preprocessor, expand_inputs

from . import precisions as registry
from . import report
from .calibration import (METHODS, CalibrationResult, calibrate, histogram_collector, input_tensor, layer_names,
                          observe, ranges)
from .errors import ExportError
from .onnx_checks import check_onnx, check_typed_graph
from .onnx_graph import INPUT_NAME, GraphSpec, build_graph
from .precisions import Precision
from .progress import say, stage
from .smoothing import Migration, apply_migration, plan_migration
from .trtexec_script import write_build_script
from .validation import (Case, EvalSet, gate_images, gate_shapes, random_cases, reference_outputs, require, run_batches,
                         summary, warn_if_weak)

MIN_OPSET, MAX_OPSET = 17, 21
PARK_ABOVE = 256 << 20  # models larger than this leave memory while a backend gates an artifact
PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.partial$")
OWNER = ".owner.json"
PARKED = ".reference-weights."
GATE_INPUTS = "gate_inputs.npy"


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
    calib_batch: int = 4
    eval_images: Path | None = None
    eval_count: int = 16
    smooth_alpha: float | None = 0.75  # share of an outlier channel's excess range moved into the weights; None: off
    outlier_shift: bool = True  # Outlier Suppression+ per-channel shifts
    mixed_precision: bool = True
    min_quantized_fraction: float = 0.5
    sensitivity_images: int = 8
    extra_steps: list = field(default_factory=list)  # callables(folder, manifest) run before the rename


@dataclass
class ExportContext:
    """What every step of one export shares."""

    loaded: LoadedCheckpoint
    options: ExportOptions
    work: Path
    manifest: Manifest
    preprocessor: Preprocessor
    size: tuple[int, int]
    calib_images: list[Path]
    eval_set: EvalSet | None
    calibration: CalibrationResult | None = None
    migration: Migration | None = None  # the outlier migration folded into the model, if any
    migration_check: dict | None = None  # its exactness check
    parked: Path | None = None  # the file the PyTorch weights are mapped from, while unchanged

    @property
    def model(self):
        return self.loaded.model

    def park_model(self) -> None:
        """Move the PyTorch weights to a file-backed mapping before a backend loads an artifact: the
        gates do not touch them, so they leave the resident set (ViT-H: 2.5 GB) and page back in
        when the next PyTorch step reads them. The file lives in the work folder."""
        model = self.model
        if sum(p.numel() * p.element_size() for p in model.parameters()) < PARK_ABOVE:
            return
        import torch

        if self.parked is None:  # first park, or the weights changed since (the outlier migration)
            fd, name = tempfile.mkstemp(prefix=PARKED, suffix=".pt", dir=self.work)
            os.close(fd)
            self.parked = Path(name)
            torch.save({k: v.detach() for k, v in model.state_dict().items()}, self.parked)
        # fresh mappings have no resident pages; never rewrite a file that is mapped (SIGBUS)
        mapped = torch.load(self.parked, mmap=True, weights_only=True)
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            tensor.data = mapped[name]
        release_memory()

    def weights_changed(self) -> None:
        """The next park writes a new file; the old one is unlinked (mappings keep it readable)."""
        if self.parked is not None:
            self.parked.unlink(missing_ok=True)
            self.parked = None


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS: glibc keeps the arenas of a
    freed ONNX Runtime session or PyTorch tensors, which the next backend would stack on."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# ----------------------------------------------------------------------------- options


def check_options(loaded: LoadedCheckpoint, options: ExportOptions) -> list[Precision]:
    arch = loaded.architecture
    records = registry.resolve(options.precisions)
    if options.resolution is not None:
        h, w = options.resolution
        if h % arch.patch_size or w % arch.patch_size:
            raise ExportError(f"resolution {h}x{w} is not a multiple of the patch size {arch.patch_size}; "
                              f"try {max(1, h // arch.patch_size) * arch.patch_size}x"
                              f"{max(1, w // arch.patch_size) * arch.patch_size}")
    if not 1 <= options.max_batch <= 4096:
        raise ExportError(f"--max-batch must be between 1 and 4096, got {options.max_batch}")
    if options.opt_batch is not None and not 1 <= options.opt_batch <= options.max_batch:
        raise ExportError(f"--opt-batch must be between 1 and --max-batch ({options.max_batch})")
    if not MIN_OPSET <= options.opset <= MAX_OPSET:
        raise ExportError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET} (LayerNormalization needs 17)")
    if options.calib_method not in METHODS:
        raise ExportError(f"--calib-method must be one of {', '.join(METHODS)}")
    if options.calib_count < 1 or options.eval_count < 1 or options.calib_batch < 1:
        raise ExportError("--calib-count, --eval-count and --calib-batch must be >= 1")
    if options.smooth_alpha is not None and not 0 <= options.smooth_alpha <= 1:
        raise ExportError(f"--smooth-alpha must be between 0 (off) and 1, got {options.smooth_alpha}")
    if not 0 <= options.min_quantized_fraction <= 1:
        raise ExportError("--min-quantized-fraction must be between 0 and 1")
    if any(p.quantized for p in records) and options.calib_images is None:
        raise ExportError("int8, int8-cpu and fp8 need calibration images: pass --calib-images DIR (a few hundred "
                          "real photos for production, a few dozen for a smoke test)")
    for flag, folder in (("--calib-images", options.calib_images), ("--eval-images", options.eval_images)):
        if folder is not None and not Path(folder).is_dir():
            raise ExportError(f"{flag} folder not found: {folder}")
    return records


# ----------------------------------------------------------------------------- the flow


def export(loaded: LoadedCheckpoint, options: ExportOptions) -> Path:
    """Export `loaded` as validated artifacts into `output_dir/<name>/` and return that folder.
    Quantized precisions fold the outlier migration into `loaded.model` in place (exact in float)."""
    records = check_options(loaded, options)
    name = options.name or loaded.name
    if not is_plain_name(name) or name.startswith("."):
        raise ExportError(f"--name {name!r} must be a plain folder name (letters, digits, . _ + -; no path, "
                          "not hidden)")
    output_dir = Path(options.output_dir)
    final = output_dir / name
    _check_destination(final, options.overwrite)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"output folder {output_dir} is not writable ({exc.strerror or exc}); "
                          "choose another with --output-dir") from None
    remove_stale_partials(output_dir)
    with _export_lock(output_dir, name):
        _check_destination(final, options.overwrite)
        work = _make_partial(output_dir, name)
        try:
            manifest = _export_into(work, loaded, options, name, records)
            for step in options.extra_steps:
                step(work, manifest)
            for parked in work.glob(PARKED + "*"):
                parked.unlink()
            write_build_script(work, manifest)
            manifest.save(work)
            (work / "report.md").write_text(report.render(manifest))
            (work / OWNER).unlink()
            _normal_permissions(work)
            _move_into_place(work, final, options.overwrite)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    say(f"artifacts ready: {final}")
    return final


def _export_into(work: Path, loaded: LoadedCheckpoint, options: ExportOptions, name: str,
                 records: list[Precision]) -> Manifest:
    native = (loaded.preprocessing.height, loaded.preprocessing.width)
    size = options.resolution or native
    manifest = _new_manifest(loaded, options, name, size)
    manifest.folder = work
    preprocessor = Preprocessor(manifest.preprocessing, size)
    calib, held_out = _image_split(options, records)
    eval_set = None
    if held_out:
        with stage(f"reference outputs on {len(held_out)} held-out images"):
            eval_set = EvalSet.build(loaded.model, held_out, preprocessor, options.max_batch)
        if any(p.low_precision for p in records):
            warn_if_weak(eval_set)
        # kept with the artifacts: TensorRT plans are gated on them later, on the target GPU
        path = work / GATE_INPUTS
        np.save(path, np.concatenate(eval_set.batches).astype(np.float16), allow_pickle=False)
        record = file_record(path)
        manifest.gate_inputs = {"path": record.path, "sha256": record.sha256, "bytes": record.bytes,
                                "images": len(eval_set.names)}
    ctx = ExportContext(loaded, options, work, manifest, preprocessor, size, calib, eval_set)
    for record in records:
        if record.mode_of:
            artifact = export_runtime_mode(ctx, record)
        elif record.quantized:
            artifact = export_quantized(ctx, record)
        else:
            artifact = export_graph(ctx, record)
        manifest.artifacts[record.name] = artifact
        say(f"  {record.name}: {summary(artifact.validation)}")
    return manifest


def export_graph(ctx: ExportContext, record: Precision) -> Artifact:
    """fp32 / fp16: build the typed graph, check it, gate it."""
    opts = ctx.options
    opset = max(opts.opset, record.min_opset)
    with stage(f"{record.name} ONNX: build"):
        path = build_graph(ctx.model, GraphSpec(record.graph, opts.resolution, opset), ctx.work / record.file)
    check_onnx(path)
    matmuls = check_typed_graph(path)
    if record.name == "fp32":  # the references first: PyTorch and ONNX Runtime never hold memory together
        cases = random_cases(_fp32_shapes(ctx))
        with stage("fp32 ONNX: PyTorch reference outputs"):
            references = [reference_outputs(ctx.model, case.pixel_values) for case in cases]
    ctx.park_model()
    backend = OnnxRuntimeBackend(path)
    label = path.name
    if record.name == "fp32":
        with stage("fp32 ONNX: parity gate vs PyTorch at several batch sizes and resolutions"):
            validation = gate_shapes(backend, cases, references, record.gate, label)
        if ctx.eval_set is not None:
            outputs = run_batches(backend, ctx.eval_set.batches, label)
            validation.update({k: v for k, v in gate_images(outputs, ctx.eval_set, registry.Gate(), label).items()
                               if k in ("metrics", "inputs", "weak_estimate")})
    else:
        with stage(f"{record.name} ONNX: gate vs PyTorch fp32 on held-out images"):
            outputs = run_batches(backend, ctx.eval_set.batches, label)
            validation = require(gate_images(outputs, ctx.eval_set, record.gate, label))
    validation["matmul_dtypes"] = matmuls
    return artifact_entry(ctx, record, path, validation, opset)


def export_runtime_mode(ctx: ExportContext, record: Precision) -> Artifact:
    """bf16: the fp32 file run with a bf16 inference precision, gated on this machine."""
    from ijepa_deploy.runtime.backends.openvino_backend import cpu_has_bf16, openvino_unavailable_reason

    reason = openvino_unavailable_reason()
    if reason:
        raise ExportError(f"{record.name} is gated with OpenVINO, which is missing: {reason}")
    if not cpu_has_bf16():
        raise ExportError(f"this CPU has no native bf16 (AVX512-BF16 or AMX), so {record.name} cannot be gated "
                          "here; export it on the machine that will serve it")
    base = ctx.manifest.artifacts[record.mode_of]
    label = f"{base.file} in {record.name}"
    with stage(f"{record.name}: gate {base.file} with a {record.inference_precision} inference precision "
               "(OpenVINO) vs PyTorch fp32 on held-out images"):
        outputs = _run_openvino(ctx, ctx.work / base.file, record.inference_precision, label)
        validation = require(gate_images(outputs, ctx.eval_set, record.gate, label))
    validation["backend"] = "openvino"
    return Artifact(precision=record.name, file=base.file, data_file=base.data_file, files=list(base.files),
                    bytes=base.bytes, opset=base.opset, validation=validation, tensorrt=False, cpu_only=True,
                    mode_of=record.mode_of, inference_precision=record.inference_precision,
                    backends=list(record.backends), description=record.description)


def export_quantized(ctx: ExportContext, record: Precision) -> Artifact:
    """int8 / int8-cpu / fp8: calibrate (shared), place Q/DQ, gate; mixed precision when needed."""
    from . import quantization as q
    from .qdq_lint import lint_file

    opts = ctx.options
    recipe = record.recipe
    _prepare_calibration(ctx)
    symmetric = recipe.activation != "uint8"
    calib_ranges = ranges(ctx.calibration, opts.calib_method, symmetric, ctx.migration)
    acts = {layer: q.act_quant(*calib_ranges[input_tensor(layer)], recipe.activation)
            for layer in layer_names(ctx.model)}
    shifts = {}
    if ctx.migration is not None:
        shifts = {layer: z for layer in acts if (z := ctx.migration.explicit_shift(input_tensor(layer))) is not None}
    opset = max(opts.opset, record.min_opset)
    path = ctx.work / record.file

    def build_and_gate(plan):
        q.remove_onnx(path)
        kept = len(acts) - len(plan.activations)
        with stage(f"{record.name}: build Q/DQ graph ({len(plan.activations)} quantized MatMuls, {kept} kept float)"):
            build_graph(ctx.model, GraphSpec(record.graph, opts.resolution, opset, plan), path)
        if recipe.tensorrt_rules:
            violations = lint_file(path)
            if violations:
                raise ExportError(f"{path.name} breaks {len(violations)} TensorRT Q/DQ rule(s), first: {violations[0]}")
        check_onnx(path)
        with stage(f"{record.name}: gate vs PyTorch fp32 on held-out images"):
            ctx.park_model()
            backend = OnnxRuntimeBackend(path)
            outputs = run_batches(backend, ctx.eval_set.batches, path.name)
            del backend
        result = gate_images(outputs, ctx.eval_set, record.gate, path.name)
        if not result["passed"]:
            say(f"  {record.name}: {summary(result)} -> below the gate")
        return result, result["passed"]

    tokens = (ctx.size[0] // ctx.loaded.architecture.patch_size) * (ctx.size[1] // ctx.loaded.architecture.patch_size)
    total = ctx.loaded.architecture.gflops_per_image(*ctx.size) * 1e9
    try:
        validation, attempts = q.search(ctx.model, recipe, acts, record.gate, ctx.calibration.pixels,
                                        ctx.calibration.reference, total, tokens, build_and_gate,
                                        opts.mixed_precision, opts.min_quantized_fraction, shifts)
    except BaseException:
        q.remove_onnx(path)
        raise
    final = attempts[-1]
    validation["matmul_dtypes"] = check_typed_graph(path)
    openvino_precision = _gate_openvino_bf16(ctx, record, path, validation)
    calibration = {"method": opts.calib_method, "count": len(ctx.calib_images),
                   "images": [p.name for p in ctx.calib_images]}
    quant = q.quantization_record(recipe, acts, final.float_layers, final.quantized_fraction, attempts,
                                  opts.smooth_alpha, opts.outlier_shift)
    if ctx.migration is not None:
        quant["migration_check"] = ctx.migration_check
    return artifact_entry(ctx, record, path, validation, opset, calibration=calibration, quantization=quant,
                          openvino_precision=openvino_precision)


def _gate_openvino_bf16(ctx: ExportContext, record: Precision, path: Path, validation: dict) -> str | None:
    """OpenVINO runs a quantized file's float ops (attention, LayerNorm) in bf16 by default on CPUs
    that have it, which is what makes it fast there: gate that too, and record whether it holds."""
    from ijepa_deploy.runtime.backends import OPENVINO_PRECISIONS
    from ijepa_deploy.runtime.backends.openvino_backend import cpu_has_bf16, openvino_unavailable_reason

    if record.name not in OPENVINO_PRECISIONS:
        return None
    if openvino_unavailable_reason() or not cpu_has_bf16():
        return "f32"
    with stage(f"{record.name}: gate under OpenVINO with bf16 float ops"):
        outputs = _run_openvino(ctx, path, "bf16", f"{path.name} (OpenVINO bf16)")
    result = gate_images(outputs, ctx.eval_set, record.gate, f"{path.name} under OpenVINO bf16")
    validation["openvino_bf16"] = {"passed": result["passed"], "metrics": result["metrics"]}
    say(f"  {record.name} under OpenVINO bf16: {summary(result)}" + ("" if result["passed"] else
                                                                      " -> OpenVINO will run it in f32"))
    return "bf16" if result["passed"] else "f32"


def _run_openvino(ctx: ExportContext, path: Path, inference_precision: str, label: str) -> dict[str, np.ndarray]:
    """Outputs of `path` under OpenVINO on the held-out images (a private compile cache, removed after)."""
    from ijepa_deploy.runtime.backends.openvino_backend import OpenVinoBackend

    ctx.park_model()
    cache = ctx.work / ".ovcache"
    try:
        backend = OpenVinoBackend(path, inference_precision=inference_precision, cache_dir=cache)
        return run_batches(backend, ctx.eval_set.batches, label)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _prepare_calibration(ctx: ExportContext) -> None:
    """Calibrate once per export; fold the outlier migration (shift + SmoothQuant scale) into the
    model; re-collect histograms after it when the method needs them."""
    if ctx.calibration is not None:
        return
    opts = ctx.options
    symmetries = tuple(sorted({p.recipe.activation != "uint8" for p in registry.resolve(opts.precisions)
                               if p.quantized}))
    migrate = bool(opts.smooth_alpha) or opts.outlier_shift
    keep = min(opts.sensitivity_images, len(ctx.calib_images))
    if len(ctx.calib_images) < 16:
        say(f"  warning: calibrating on {len(ctx.calib_images)} images: the ranges fit those images only (a few "
            "hundred representative photos for production)")
    with stage(f"calibrate ({opts.calib_method}, {len(ctx.calib_images)} images, streaming)"):
        ctx.calibration = calibrate(ctx.model, ctx.calib_images, ctx.preprocessor, method=opts.calib_method,
                                    symmetries=() if migrate else symmetries, batch_size=opts.calib_batch,
                                    keep_pixels=keep)
    if not migrate:
        return
    with stage(f"outlier migration (per-channel shift {'on' if opts.outlier_shift else 'off'}, SmoothQuant alpha "
               f"{opts.smooth_alpha or 'off'}): fold into LayerNorm, v and the MatMuls"):
        ctx.migration = plan_migration(ctx.model, ctx.calibration, opts.smooth_alpha, opts.outlier_shift)
        apply_migration(ctx.model, ctx.migration)
        ctx.weights_changed()
        ctx.migration_check = _check_migration_exact(ctx)
    if opts.calib_method != "minmax":
        with stage(f"calibrate {opts.calib_method} histograms of the migrated activations"):
            ctx.calibration.histograms = {(opts.calib_method, s): histogram_collector(opts.calib_method, s)
                                          for s in symmetries}
            explicit = {k: z for k, z in ctx.migration.shift.items() if ctx.migration.explicit_shift(k) is not None}
            observe(ctx.model, ctx.calib_images, ctx.preprocessor, ctx.calibration, opts.calib_batch,
                    histograms_only=True, shifts=explicit)


def _check_migration_exact(ctx: ExportContext) -> dict:
    """The migration must not change the float function: the migrated model against the reference
    outputs computed before folding, with the fp32 gate."""
    gate = registry.get("fp32").gate
    if ctx.eval_set is not None:
        pixels, ref = ctx.eval_set.batches[0][:2], {k: v[:2] for k, v in ctx.eval_set.reference.items()}
    else:
        pixels, ref = ctx.calibration.pixels[0][:2], {k: v[:2] for k, v in ctx.calibration.reference.items()}
    got = reference_outputs(ctx.model, pixels)
    scale = float(np.abs(ref["last_hidden_state"]).max())
    check = {"images": int(len(pixels)),
             "max_abs": float(np.abs(got["last_hidden_state"] - ref["last_hidden_state"]).max()),
             "pooled_cosine": float(np.min((got["embedding"] * ref["embedding"]).sum(1)
                                           / np.linalg.norm(got["embedding"], axis=1)
                                           / np.linalg.norm(ref["embedding"], axis=1)))}
    # float32 rounding grows with the activations' magnitude: the bound is relative beyond 1.
    failures = gate.failures({"pooled_cosine": check["pooled_cosine"], "max_abs": check["max_abs"] / max(scale, 1.0)})
    check["passed"] = not failures
    if failures:
        raise ExportError(f"the outlier migration changed the float model ({'; '.join(failures)}): this is a bug; "
                          "export with --smooth-alpha 0 --no-outlier-shift meanwhile")
    return check


# ----------------------------------------------------------------------------- helpers


def _fp32_shapes(ctx: ExportContext) -> list[tuple[int, int, int]]:
    opts, arch, size = ctx.options, ctx.loaded.architecture, ctx.size
    batches = sorted({b for b in (1, 3, opts.max_batch) if b <= opts.max_batch})
    shapes = [(b, *size) for b in batches]
    if opts.resolution is None:
        p, g = arch.patch_size, arch.grid_size
        small = min(2, opts.max_batch)
        shapes += [(small, (g + 2) * p, (g + 2) * p), (small, max(1, g - 2) * p, (g + 6) * p)]
    return shapes


def _image_split(options: ExportOptions, records: list[Precision]) -> tuple[list[Path], list[Path]]:
    calib = expand_inputs([options.calib_images]) if options.calib_images else []
    if options.eval_images:
        held_out = expand_inputs([options.eval_images])[: options.eval_count]
    else:
        held_out = calib[options.calib_count: options.calib_count + options.eval_count]
    calib = calib[: options.calib_count]
    overlap = {p.resolve() for p in calib} & {p.resolve() for p in held_out}
    if overlap:
        raise ExportError(f"--eval-images overlaps the calibration images ({sorted(overlap)[0].name}, ...); "
                          "held-out images must be different")
    low = [p.name for p in records if p.low_precision]
    if low and len(held_out) < 2:
        raise ExportError(f"{', '.join(low)} must be gated on at least 2 held-out real images (16+ recommended; "
                          f"random inputs never certify a low precision): pass --eval-images DIR"
                          + (f", or more --calib-images than --calib-count {options.calib_count}" if calib else ""))
    return calib, held_out


def artifact_entry(ctx: ExportContext, record: Precision, path: Path, validation: dict, opset: int,
                   **extra) -> Artifact:
    data = path.with_name(path.name + ".data")
    files = [file_record(path)] + ([file_record(data)] if data.exists() else [])
    return Artifact(precision=record.name, file=path.name, data_file=data.name if data.exists() else None,
                    files=files, bytes=sum(f.bytes for f in files), opset=opset, validation=validation,
                    tensorrt=record.tensorrt, min_compute_capability=record.min_compute_capability,
                    cpu_only=record.cpu_only, backends=list(record.backends) if record.backends else None,
                    description=record.description, **extra)


def file_record(path: Path) -> FileRecord:
    return FileRecord(path=path.name, sha256=sha256_file(path), bytes=path.stat().st_size)


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
    from dataclasses import replace

    preprocessing = replace(loaded.preprocessing, height=size[0], width=size[1])
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
    for dist in ("ijepa-deploy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    versions.setdefault("onnxruntime", versions.get("onnxruntime-gpu", "missing"))
    versions.setdefault("ijepa-deploy", "source")
    return versions


# ----------------------------------------------------------------------------- the folder


def _check_destination(final: Path, overwrite: bool) -> None:
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise ExportError(f"{final} exists and is not a folder; remove it or choose another --name")
    if final.exists():
        if not overwrite:
            raise ExportError(f"{final} already exists; pass --overwrite to replace it or --name to export beside it")
        if not (final / "manifest.json").is_file():
            raise ExportError(f"{final} exists but is not an ijepa-export artifact folder (no manifest.json); "
                              "--overwrite only replaces artifact folders: remove it yourself or choose another --name")


@contextmanager
def _export_lock(output_dir: Path, name: str):
    """An exclusive lock per artifact name, held for the whole export (released by the kernel
    even when the process is killed)."""
    path = output_dir / f".{name}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ExportError(f"output folder {output_dir} is not writable ({exc.strerror or exc}); "
                          "choose another with --output-dir") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(f"another export into {output_dir / name} is running; wait for it or use another "
                              "--name") from None
        yield
    finally:
        os.close(fd)


def _process_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _make_partial(output_dir: Path, name: str) -> Path:
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".partial", dir=output_dir))
    except OSError as exc:
        raise ExportError(f"output folder {output_dir} is not writable ({exc.strerror or exc}); "
                          "choose another with --output-dir") from None
    (work / OWNER).write_text(json.dumps({"pid": os.getpid(), "start": _process_start(os.getpid()),
                                          "host": platform.node()}))
    return work


def remove_stale_partials(output_dir: Path) -> list[Path]:
    """Remove our own temporary folders whose process is gone (a SIGKILLed export)."""
    removed = []
    for path in output_dir.iterdir():
        m = PARTIAL.match(path.name)
        if not m or not path.is_dir() or path.is_symlink():
            continue
        try:
            owner = json.loads((path / OWNER).read_text())
        except (OSError, ValueError):
            owner = {"pid": int(m["pid"]), "start": None, "host": platform.node()}
        if owner.get("host") != platform.node():
            continue  # a shared folder: another machine's export may be alive
        pid = int(owner.get("pid", m["pid"]))
        start = _process_start(pid)
        alive = start is not None and (owner.get("start") in (None, start))
        if not alive:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        say(f"  removed {len(removed)} stale temporary folder(s) of killed exports: "
            + ", ".join(p.name for p in removed))
    return removed


def _normal_permissions(folder: Path) -> None:
    """mkdtemp makes 0700: give everything the umask's normal permissions so the folder can be
    deployed to another user (Triton, a service)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod((0o777 if os.access(path, os.X_OK) else 0o666) & ~umask)


def _move_into_place(work: Path, final: Path, overwrite: bool) -> None:
    """Rename under the export lock; an existing folder is only replaced with `overwrite`."""
    if not final.exists():
        os.rename(work, final)
        return
    if not overwrite:  # appeared although we hold the lock: someone bypassed it
        raise ExportError(f"{final} appeared during the export; nothing was replaced")
    trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".partial", dir=final.parent))
    os.rmdir(trash)
    os.rename(final, trash)
    try:
        os.rename(work, final)
    except BaseException:
        os.rename(trash, final)
        raise
    shutil.rmtree(trash, ignore_errors=True)
