"""manifest.json: the typed, validated contract between the exporter and the runtime.

The exporter writes it; the runtime reads nothing else. On load the JSON is checked against
`manifest.schema.json` (the error names the field and the file), parsed into the dataclasses
below, and checked for consistency (ranges in order, every file name a plain name inside the
folder). `Manifest.verify(precision)` checks the sha256 of every file an artifact uses before
it is opened. `SCHEMA_VERSION` is bumped on any incompatible change.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .atomic import write_atomic
from .errors import ManifestError
from .integrity import confined, verify_file

SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")
MAX_MANIFEST_BYTES = 16 << 20


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema)


def _where(error) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path.lstrip(".") or "(top level)"


def check_schema(data: object, where: str, subschema: str | None = None) -> None:
    """Validate `data` against the manifest schema (or one of its $defs); one line naming the field."""
    validator = _validator()
    if subschema:
        validator = validator.evolve(schema={"$ref": f"#/$defs/{subschema}", "$defs": validator.schema["$defs"]})
    error = next(iter(sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        message = error.message if len(error.message) < 200 else error.message[:200] + "..."
        raise ManifestError(f"{where}: field {_where(error)}: {message}")


@dataclass(frozen=True)
class Preprocessing:
    """How pixels are prepared: resize straight to height x width, rescale, normalize, NCHW."""

    height: int
    width: int
    resample: str = "bilinear"
    rescale_factor: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    channel_order: str = "RGB"
    layout: str = "NCHW"
    exif_orientation: bool = True  # apply the EXIF orientation tag, as transformers' load_image does
    max_pixels: int = 100_000_000  # images with more pixels are refused before decoding

    @classmethod
    def from_dict(cls, data: dict, where: str = "preprocessing") -> "Preprocessing":
        check_schema(data, where, "preprocessing")
        return cls(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"])})


@dataclass(frozen=True)
class FileRecord:
    path: str
    sha256: str
    bytes: int


@dataclass
class Artifact:
    """One ONNX artifact (or a runtime mode of one, such as bf16 over the fp32 file)."""

    precision: str
    file: str
    files: list[FileRecord]
    bytes: int
    opset: int
    validation: dict
    tensorrt: bool  # TensorRT can build a plan from this file
    cpu_only: bool
    data_file: str | None = None
    min_compute_capability: str | None = None
    mode_of: str | None = None  # "fp32" for bf16: the same file run with another inference precision
    inference_precision: str | None = None
    # OpenVINO may run this file's float ops in bf16 (gated at export on a CPU with bf16); else f32
    openvino_precision: str | None = None
    backends: list[str] | None = None  # backends that can run it (None: any)
    calibration: dict | None = None
    quantization: dict | None = None
    description: str = ""


@dataclass
class Engine:
    """A TensorRT plan built on one GPU with one TensorRT version."""

    precision: str
    file: str
    sha256: str
    bytes: int
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    profiles: list[dict]
    version_compatible: bool = False
    hardware_compatibility: str | None = None  # "ampere_plus", read from the plan itself
    cpu_arch: str | None = None  # "x86_64" / "aarch64": plans do not cross CPU architectures
    stripped: bool = False  # weight-stripped: refitted from the artifact's ONNX when loaded
    precision_report: dict | None = None  # what the engine inspector says every GEMM runs in, attention fusion
    build_seconds: float | None = None
    optimization_level: int | None = None
    tf32: bool | None = None
    timing_cache: str | None = None
    attention_kernels: list[str] | None = None
    layers: int | None = None
    inspection_error: str | None = None
    validation: dict | None = None


_NESTED = {"artifacts": Artifact, "engines": Engine}


@dataclass
class Manifest:
    name: str
    architecture: dict
    checkpoint: dict
    preprocessing: Preprocessing
    io: dict  # inputs / outputs: name, dtype, shape (str = dynamic axis)
    batch: dict  # min, opt, max
    resolution: dict  # dynamic, native, min, max, multiple_of
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    engines: list[Engine] = field(default_factory=list)
    labels: dict | None = None  # class index (as str) -> label
    gate_inputs: dict | None = None  # path, sha256, bytes, images: held-out pixels for gating TensorRT plans
    pooling: str = "mean"
    variant: str | None = None
    encoder: str | None = None  # context / target for original checkpoints
    tools: dict = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION
    folder: Path | None = field(default=None, compare=False, repr=False)  # where it was loaded from

    # ---------------------------------------------------------------- derived facts

    @property
    def dynamic_resolution(self) -> bool:
        return bool(self.resolution["dynamic"])

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self.io["outputs"]]

    @property
    def input_name(self) -> str:
        return self.io["inputs"][0]["name"]

    @property
    def hidden_size(self) -> int:
        return int(self.architecture["hidden_size"])

    def artifact(self, precision: str) -> Artifact:
        if precision not in self.artifacts:
            have = ", ".join(sorted(self.artifacts)) or "none"
            raise ManifestError(f"precision {precision!r} was not exported to {self.name} (available: {have}); "
                                f"re-export with --precision {precision}")
        return self.artifacts[precision]

    def engines_for(self, precision: str) -> list[Engine]:
        return [e for e in self.engines if e.precision == precision]

    # ---------------------------------------------------------------- files

    def path(self, name: str, what: str = "file") -> Path:
        """A file of this folder, confined to it."""
        if self.folder is None:
            raise ManifestError(f"manifest {self.name} was not loaded from a folder")
        return confined(self.folder, name, what)

    def verify(self, precision: str) -> Path:
        """Check every file of `precision`'s artifact against its sha256; return the ONNX path."""
        art = self.artifact(precision)
        for record in art.files:
            verify_file(self.path(record.path), record.sha256, record.bytes)
        return self.path(art.file)

    def verify_engine(self, engine: Engine) -> Path:
        path = self.path(engine.file, "engine")
        verify_file(path, engine.sha256, engine.bytes)
        return path

    # ---------------------------------------------------------------- (de)serialization

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "folder"}
        pre = dataclasses.asdict(self.preprocessing)
        data["preprocessing"] = {**pre, "mean": list(pre["mean"]), "std": list(pre["std"])}
        data["artifacts"] = {k: _drop_none(dataclasses.asdict(v)) for k, v in self.artifacts.items()}
        data["engines"] = [_drop_none(dataclasses.asdict(e)) for e in self.engines]
        return data

    def save(self, folder: Path) -> Path:
        data = self.to_dict()
        check_schema(data, f"manifest for {folder}")  # never write what the runtime would refuse
        return write_atomic(Path(folder) / MANIFEST_NAME, json.dumps(data, indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: object, where: str = MANIFEST_NAME) -> "Manifest":
        if not isinstance(data, dict):
            raise ManifestError(f"{where} is not a JSON object")
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ManifestError(f"{where} has no integer schema_version")
        if version > SCHEMA_VERSION:
            raise ManifestError(f"{where} uses manifest schema {version}, newer than this runtime's {SCHEMA_VERSION}: "
                                "upgrade ijepa-deploy")
        if version < SCHEMA_VERSION:
            raise ManifestError(f"{where} uses manifest schema {version}, written by an older ijepa-export whose "
                                "low-precision gates are no longer trusted: re-export the artifacts")
        check_schema(data, where)
        fields = {f.name for f in dataclasses.fields(cls)} - {"folder"}
        kwargs = {k: v for k, v in data.items() if k in fields}
        pre = _typed(Preprocessing, data["preprocessing"])
        kwargs["preprocessing"] = dataclasses.replace(pre, mean=tuple(pre.mean), std=tuple(pre.std))
        kwargs["artifacts"] = {k: _typed(Artifact, v) for k, v in data["artifacts"].items()}
        kwargs["engines"] = [_typed(Engine, e) for e in data["engines"]]
        manifest = cls(**kwargs)
        manifest._check_consistency(where)
        return manifest

    @classmethod
    def load(cls, folder: str | Path) -> "Manifest":
        """Read and validate `folder/manifest.json` (files are verified later, per artifact)."""
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not folder.is_dir():
            raise ManifestError(f"artifacts folder not found: {folder}; export one with `ijepa-export --variant NAME`")
        if not path.is_file():
            raise ManifestError(f"{folder} has no {MANIFEST_NAME}: it is not an ijepa-export artifacts folder "
                                "(re-run `ijepa-export`, which writes it)")
        try:
            if path.stat().st_size > MAX_MANIFEST_BYTES:
                raise ManifestError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB: not a manifest")
            data = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError and the int-digits limit are ValueErrors
            raise ManifestError(f"{path} is not valid JSON ({str(exc)[:200]})") from None
        manifest = cls.from_dict(data, str(path))
        manifest.folder = folder
        for name in manifest.referenced_files():
            confined(folder, name)
        return manifest

    def referenced_files(self) -> list[str]:
        names = [r.path for a in self.artifacts.values() for r in a.files]
        names += [n for a in self.artifacts.values() for n in (a.file, a.data_file) if n]
        names += [self.gate_inputs["path"]] if self.gate_inputs else []
        return names + [e.file for e in self.engines]

    def _check_consistency(self, where: str) -> None:
        b, r = self.batch, self.resolution
        if not b["min"] <= b["opt"] <= b["max"]:
            raise ManifestError(f"{where}: field batch: min <= opt <= max does not hold ({b})")
        if any(lo > hi for lo, hi in zip(r["min"], r["max"])):
            raise ManifestError(f"{where}: field resolution: min {r['min']} exceeds max {r['max']}")
        if any(x % r["multiple_of"] for x in (*r["min"], *r["max"])):
            raise ManifestError(f"{where}: field resolution: sizes must be multiples of {r['multiple_of']}")
        arch = self.architecture
        if arch["hidden_size"] % arch["num_heads"]:
            raise ManifestError(f"{where}: field architecture: hidden_size is not divisible by num_heads")
        names = self.output_names
        if "embedding" not in names or "last_hidden_state" not in names:
            raise ManifestError(f"{where}: field io.outputs: needs last_hidden_state and embedding, has {names}")
        for key, art in self.artifacts.items():
            if art.precision != key:
                raise ManifestError(f"{where}: field artifacts.{key}.precision is {art.precision!r}")
            listed = {f.path for f in art.files}
            if art.file not in listed or (art.data_file and art.data_file not in listed):
                raise ManifestError(f"{where}: field artifacts.{key}.files must list {art.file} and its data file")
            if art.mode_of and art.mode_of not in self.artifacts:
                raise ManifestError(f"{where}: field artifacts.{key}.mode_of names {art.mode_of!r}, not exported")


def _drop_none(data: dict) -> dict:
    return {k: v for k, v in data.items() if v is not None}


def _typed(cls, data: dict):
    """A dataclass from schema-checked JSON; keys it does not know (newer writers) are ignored."""
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in known}
    if cls is Artifact:
        kwargs["files"] = [_typed(FileRecord, f) for f in data["files"]]
    return cls(**kwargs)
