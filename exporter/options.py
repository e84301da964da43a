"""`ExportOptions`: everything an export is asked to do, checked before any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ijepa_deploy.contract.architecture import Architecture
from ijepa_deploy.contract.canons import CANONS, canon_preprocessing
from ijepa_deploy.contract.integrity import is_plain_name
from ijepa_deploy.contract.manifest import Preprocessing
from ijepa_deploy.runtime.preprocessing import expand_inputs

from . import precisions as registry
from .calibration import METHODS
from .errors import ExportError
from .precisions import ExportPrecision

MIN_OPSET, MAX_OPSET = 17, 21


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
    preprocessing: str | None = None  # a canon (hf, imagenet); None: the checkpoint's own (see reference_model)
    extra_steps: list = field(default_factory=list)  # callables(folder, manifest) -> manifest, run before the rename


def check_options(arch: Architecture, options: ExportOptions, name: str) -> list[ExportPrecision]:
    """The precision records to export; one clear line for anything that cannot work."""
    records = registry.resolve(options.precisions)
    if not is_plain_name(name) or name.startswith("."):
        raise ExportError(f"--name {name!r} must be a plain folder name (letters, digits, . _ + -; no path, "
                          "not hidden)")
    if options.resolution is not None:
        h, w = options.resolution
        if h % arch.patch_size or w % arch.patch_size:
            raise ExportError(f"resolution {h}x{w} is not a multiple of the patch size {arch.patch_size}; "
                              f"try {max(1, h // arch.patch_size) * arch.patch_size}x"
                              f"{max(1, w // arch.patch_size) * arch.patch_size}")
    if options.preprocessing is not None and options.preprocessing not in CANONS:
        raise ExportError(f"--preprocessing must be one of {', '.join(CANONS)}, got {options.preprocessing!r}")
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


def chosen_preprocessing(checkpoint_own: Preprocessing, arch: Architecture, options: ExportOptions) -> Preprocessing:
    """The checkpoint's own preprocessing, or the canon `--preprocessing` asked for at its size."""
    if options.preprocessing is None:
        return checkpoint_own
    return canon_preprocessing(options.preprocessing, checkpoint_own.height, checkpoint_own.width, arch.image_size)


def image_split(options: ExportOptions, records: list[ExportPrecision]) -> tuple[list[Path], list[Path]]:
    """(calibration images, held-out images): never the same image in both."""
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
    low = [p.name for p in records if p.facts.low_precision]
    if low and len(held_out) < 2:
        raise ExportError(f"{', '.join(low)} must be gated on at least 2 held-out real images (16+ recommended; "
                          f"random inputs never certify a low precision): pass --eval-images DIR"
                          + (f", or more --calib-images than --calib-count {options.calib_count}" if calib else ""))
    return calib, held_out


def fp32_shapes(options: ExportOptions, arch: Architecture, size: tuple[int, int]) -> list[tuple[int, int, int]]:
    """(batch, H, W) the fp32 graph is checked at: several batch sizes, and other resolutions when dynamic."""
    batches = sorted({b for b in (1, 3, options.max_batch) if b <= options.max_batch})
    shapes = [(b, *size) for b in batches]
    if options.resolution is None:
        p, g = arch.patch_size, arch.grid_size
        small = min(2, options.max_batch)
        shapes += [(small, (g + 2) * p, (g + 2) * p), (small, max(1, g - 2) * p, (g + 6) * p)]
    return shapes
