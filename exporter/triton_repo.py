"""A Triton Inference Server model repository for an artifact folder.

    <out>/<name>_encoder/      the plan (platform tensorrt_plan) or the ONNX (backend onnxruntime)
    <out>/<name>_preprocess/   Python backend: encoded image bytes -> pixel_values, with this runtime's
                               own preprocessing vendored into the model folder (needs numpy + pillow
                               in Triton's Python, nothing else); one bad image fails only its request
    <out>/<name>/              ensemble: IMAGE (bytes) -> preprocess -> encoder -> EMBEDDING
max_batch_size never exceeds the plan's largest profile (or the manifest's max batch). A plan is
served only by a Triton whose TensorRT runs it: `target_tensorrt` (or $TRT_VERSION, which NGC
containers set) refuses a plan built for another version (Triton 25.x containers ship TensorRT
10.x, and an 11.x plan never loads on 10.x: build inside the container with build_engines.sh). The
encoder gets one instance group per optimization profile, CUDA graphs per batch bucket (a graph
captured at the bucket's max batch serves the whole bucket: images are independent, so the rows
above the real batch never reach a real row) and a warm-up per bucket before it reports ready.
Every file is verified against the manifest before it is copied; the three models are built in a
temporary folder inside `out` and each replaces its previous version by rename, so no stale file
survives and a failed run changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import ijepa_deploy.contract as contract_package
import ijepa_deploy.runtime as runtime_package
from ijepa_deploy.contract.errors import OutputError
from ijepa_deploy.contract.integrity import is_plain_name
from ijepa_deploy.contract.manifest import Engine, Manifest
from ijepa_deploy.contract.naming import gpu_slug, parse_plan_name
from ijepa_deploy.contract.records import dump_record
from ijepa_deploy.runtime.backends.tensorrt_compat import CROSS_MAJOR, version_tuple

from .errors import ExportError

log = logging.getLogger(__name__)

PREPROCESS_MODEL = '''"""Triton Python backend: encoded image bytes -> I-JEPA pixel_values (ijepa-deploy runtime, vendored)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the vendored ijepa_deploy runtime beside this file

import numpy as np
import triton_python_backend_utils as pb_utils

from ijepa_deploy.contract.errors import UserError
from ijepa_deploy.contract.manifest import Preprocessing
from ijepa_deploy.runtime.preprocessing import Preprocessor


class TritonPythonModel:
    def initialize(self, args):
        spec = json.loads((Path(__file__).parent / "preprocessing.json").read_text())
        self.preprocessor = Preprocessor(Preprocessing.from_dict(spec))

    def execute(self, requests):
        responses = []
        for request in requests:  # one bad image fails its own request, never the batch
            try:
                images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
                pixels = self.preprocessor([bytes(x) for x in images])
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("pixel_values", pixels)]))
            except UserError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
'''


def _dims(shape: list) -> str:
    return "[ " + ", ".join(str(d) if isinstance(d, int) else "-1" for d in shape[1:]) + " ]"


def _tensor(name: str, dtype: str, dims: str) -> str:
    return f'  {{\n    name: "{name}"\n    data_type: {dtype}\n    dims: {dims}\n  }}'


def serves(engine: Engine, target: str) -> bool:
    """Whether a Triton with TensorRT `target` loads this plan. `target` may give fewer parts than the
    recorded version ('10.13' or '10.13.3' for a plan of 10.13.3.9): the parts given must match."""
    built, want = version_tuple(engine.tensorrt_version), version_tuple(target)
    if engine.version_compatible:
        same = built[:1] == want[:1] or (built[0], want[0]) in CROSS_MAJOR
        return same and want >= built[:len(want)]
    return built[:len(want)] == want


def choose_engine(manifest: Manifest, precision: str, gpu: str | None, target: str | None = None) -> Engine | None:
    engines = manifest.engines_for(precision)
    if gpu:
        engines = [e for e in engines if gpu_slug(gpu) in (gpu_slug(e.gpu_name), getattr(parse_plan_name(e.file), "gpu", ""))]
        if not engines:
            have = ", ".join(sorted({e.gpu_name for e in manifest.engines_for(precision)})) or "none"
            raise ExportError(f"no {precision} plan built for GPU {gpu!r} (plans for: {have})")
    if target and engines:
        usable = [e for e in engines if serves(e, target)]
        if not usable:
            have = ", ".join(sorted({f"{e.tensorrt_version} on {e.gpu_name}" for e in engines}))
            raise ExportError(f"no {precision} plan runs on TensorRT {target} (plans: {have}); a plan loads only with "
                              "the TensorRT that built it: build inside the Triton container with build_engines.sh, "
                              "or serve the ONNX file with --onnx")
        engines = usable
    return engines[-1] if engines else None


def max_batch_size(manifest: Manifest, engine: Engine | None) -> int:
    return max(int(p["max"][0]) for p in engine.profiles) if engine else manifest.batch.max


def _buckets(manifest: Manifest, engine: Engine | None) -> list[tuple[int, int, int]]:
    """(min, opt, max) batch per optimization profile (the manifest's range without a plan)."""
    if engine is None:
        b = manifest.batch
        return [(b.min, b.opt, b.max)]
    return [tuple(int(p[k][0]) for k in ("min", "opt", "max")) for p in engine.profiles]


def _dims_list(dims) -> str:
    return "[ " + ", ".join(map(str, dims)) + " ]"


def _optimization(manifest: Manifest, engine: Engine, batch: int, pixels: list[int]) -> str:
    """CUDA graphs, one per distinct bucket, each serving its whole bucket (graph_lower_bound)."""
    name = manifest.input_name
    specs = []
    for lo, _, hi in sorted(set(_buckets(manifest, engine))):
        hi = min(hi, batch)
        shape = f'input {{ key: "{name}" value {{ dim: {_dims_list(pixels)} }} }}'
        specs.append(f"      {{\n        batch_size: {hi}\n        {shape}\n"
                     f"        graph_lower_bound {{\n          batch_size: {min(lo, hi)}\n          {shape}\n        }}\n      }}")
    return ("optimization {\n  cuda {\n    graphs: true\n    graph_spec [\n" + ",\n".join(specs) + "\n    ]\n  }\n}\n")


def _warmup(manifest: Manifest, engine: Engine | None, batch: int, pixels: list[int]) -> str:
    """A warm-up request per bucket (at its opt batch): the model reports ready once they ran."""
    entries = []
    for i, (_, opt, _) in enumerate(sorted(set(_buckets(manifest, engine)))):
        entries.append(f'  {{\n    name: "bucket_{i}_batch_{min(opt, batch)}"\n    batch_size: {min(opt, batch)}\n'
                       f'    inputs {{\n      key: "{manifest.input_name}"\n      value {{\n        data_type: TYPE_FP32\n'
                       f"        dims: {_dims_list(pixels)}\n        random_data: true\n      }}\n    }}\n  }}")
    return "model_warmup [\n" + ",\n".join(entries) + "\n]\n"


def _instance_groups(engine: Engine | None, instance_kind: str) -> str:
    """One instance per optimization profile for a plan (each context on its own profile, as
    TensorRT requires of concurrent contexts); one instance otherwise."""
    if engine is None or len(engine.profiles) == 1:
        return f"instance_group [\n  {{\n    count: 1\n    kind: {instance_kind}\n  }}\n]\n"
    groups = [f'  {{\n    name: "profile_{i}"\n    count: 1\n    kind: {instance_kind}\n    profile: [ "{i}" ]\n  }}'
              for i in range(len(engine.profiles))]
    return "instance_group [\n" + ",\n".join(groups) + "\n]\n"


def encoder_config(manifest: Manifest, model_name: str, engine: Engine | None, instance_kind: str) -> str:
    batch = max_batch_size(manifest, engine)
    pre = manifest.preprocessing
    pixels = [manifest.architecture.num_channels, pre.height, pre.width]
    notes = ""
    if engine:
        notes = (f"# TensorRT plan built with TensorRT {engine.tensorrt_version} on {engine.gpu_name} "
                 f"(sm_{engine.compute_capability.replace('.', '')}): serve it from a Triton container whose "
                 f"TensorRT is {engine.tensorrt_version}" + (" or later" if engine.version_compatible else "") + ".\n")
        if engine.version_compatible:
            notes += "# Version-compatible plan: start tritonserver with --backend-config=tensorrt,version-compatible=true\n"
        if len(engine.profiles) > 1:
            notes += ("# Each instance captures the CUDA graphs of its own profile; the specs of the other profiles\n"
                      "# are outside it and logged as not captured.\n")
    runtime = 'platform: "tensorrt_plan"' if engine else 'backend: "onnxruntime"'
    inputs = ",\n".join(_tensor(i.name, "TYPE_FP32", _dims(i.shape)) for i in manifest.io.inputs)
    outputs = ",\n".join(_tensor(o.name, "TYPE_FP32", _dims(o.shape)) for o in manifest.io.outputs)
    preferred = sorted({min(b, batch) for _, o, hi in _buckets(manifest, engine) for b in (o, hi)})
    return (f'{notes}name: "{model_name}"\n{runtime}\nmax_batch_size: {batch}\n'
            f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
            f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
            f"  max_queue_delay_microseconds: 2000\n}}\n"
            + _instance_groups(engine, instance_kind)
            + (_optimization(manifest, engine, batch, pixels) if engine else "")
            + _warmup(manifest, engine, batch, pixels))


def preprocess_config(manifest: Manifest, model_name: str, batch: int) -> str:
    pre = manifest.preprocessing
    pixels = f"[ 3, {pre.height}, {pre.width} ]"
    return ("# Python backend; needs numpy and pillow in Triton's Python (pip install pillow). ijepa_deploy's\n"
            "# runtime is vendored in 1/, so nothing else is installed.\n"
            f'name: "{model_name}"\nbackend: "python"\nmax_batch_size: {batch}\n'
            f"input [\n{_tensor('IMAGE', 'TYPE_STRING', '[ 1 ]')}\n]\n"
            f"output [\n{_tensor('pixel_values', 'TYPE_FP32', pixels)}\n]\n"
            f"instance_group [\n  {{\n    count: 2\n    kind: KIND_CPU\n  }}\n]\n")


def ensemble_config(manifest: Manifest, name: str, preprocess: str, encoder: str, batch: int) -> str:
    embedding = f"[ {manifest.hidden_size} ]"
    return (f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {batch}\n'
            f"input [\n{_tensor('IMAGE', 'TYPE_STRING', '[ 1 ]')}\n]\n"
            f"output [\n{_tensor('EMBEDDING', 'TYPE_FP32', embedding)}\n]\n"
            "ensemble_scheduling {\n  step [\n"
            f'    {{\n      model_name: "{preprocess}"\n      model_version: -1\n'
            '      input_map { key: "IMAGE" value: "IMAGE" }\n'
            '      output_map { key: "pixel_values" value: "pixel_values" }\n    },\n'
            f'    {{\n      model_name: "{encoder}"\n      model_version: -1\n'
            '      input_map { key: "pixel_values" value: "pixel_values" }\n'
            '      output_map { key: "embedding" value: "EMBEDDING" }\n    }\n  ]\n}\n')


def _vendor_runtime(target: Path) -> None:
    """Copy the runtime's and the contract's source (not their compiled caches) into a Triton model
    version folder: the preprocessing model needs nothing else but numpy and pillow."""
    for package, name in ((runtime_package, "runtime"), (contract_package, "contract")):
        shutil.copytree(Path(package.__file__).parent, target / "ijepa_deploy" / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _build(folder: Path, manifest: Manifest, staging: Path, precision: str, engine: Engine | None,
           instance_kind: str, name: str) -> dict[str, Path]:
    encoder, preprocess = f"{name}_encoder", f"{name}_preprocess"
    batch = max_batch_size(manifest, engine)
    version = staging / encoder / "1"
    version.mkdir(parents=True)
    if engine:
        shutil.copyfile(manifest.verify_engine(engine), version / "model.plan")
    else:
        art = manifest.artifact(precision)
        source = manifest.verify(precision)
        # Triton's onnxruntime backend loads model.onnx; the external data keeps its recorded name.
        shutil.copyfile(source, version / "model.onnx")
        if art.data_file:
            shutil.copyfile(manifest.path(art.data_file), version / art.data_file)
    (staging / encoder / "config.pbtxt").write_text(encoder_config(manifest, encoder, engine, instance_kind))
    (staging / preprocess / "1").mkdir(parents=True)
    (staging / preprocess / "1" / "model.py").write_text(PREPROCESS_MODEL)
    (staging / preprocess / "1" / "preprocessing.json").write_text(json.dumps(dump_record(manifest.preprocessing),
                                                                               indent=2))
    _vendor_runtime(staging / preprocess / "1")
    (staging / preprocess / "config.pbtxt").write_text(preprocess_config(manifest, preprocess, batch))
    (staging / name / "1").mkdir(parents=True)
    (staging / name / "config.pbtxt").write_text(ensemble_config(manifest, name, preprocess, encoder, batch))
    return {m: staging / m for m in (encoder, preprocess, name)}


def write_triton_repo(folder: Path, out: Path, precision: str = "fp32", prefer_plan: bool = True,
                      instance_kind: str | None = None, name: str | None = None, gpu: str | None = None,
                      target_tensorrt: str | None = None) -> Path:
    """Write (or replace) this artifact's three models in the repository `out`; returns `out`.
    `target_tensorrt`: the serving container's TensorRT version (default: $TRT_VERSION when set)."""
    manifest = Manifest.load(folder)
    manifest.artifact(precision)
    target = target_tensorrt or os.environ.get("TRT_VERSION") or None
    if target and not version_tuple(target):
        raise ExportError(f"--target-tensorrt {target!r} is not a version (e.g. 10.13.3)")
    engine = choose_engine(manifest, precision, gpu, target) if prefer_plan else None
    kind = instance_kind or ("KIND_GPU" if engine else "KIND_CPU")
    if engine and kind == "KIND_CPU":
        raise ExportError("a TensorRT plan runs on a GPU only: use --instance-kind KIND_GPU, or --onnx to serve the "
                          "ONNX file on CPUs")
    name = name or f"ijepa_{manifest.name}".replace("-", "_").replace(".", "_")
    if not is_plain_name(name) or name.startswith("."):
        raise ExportError(f"--name {name!r} must be a plain model name")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".ijepa-triton.", suffix=".partial", dir=out))
    except OSError as exc:
        raise OutputError(f"cannot write the Triton repository to {out}: {exc.strerror or exc}") from None
    try:
        built = _build(folder, manifest, staging, precision, engine, kind, name)
        for model, path in built.items():
            target = out / model
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                raise ExportError(f"{target} exists and is not a model folder; remove it first")
            if target.exists():
                trash = staging / f".{model}.previous"
                os.rename(target, trash)
            os.rename(path, target)
    except OSError as exc:
        raise OutputError(f"cannot write the Triton repository to {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if engine and engine.version_compatible:
        log.warning("note: the plan is version compatible: start tritonserver with "
                    "--backend-config=tensorrt,version-compatible=true")
    return out
