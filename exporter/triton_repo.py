"""A Triton Inference Server model repository for an artifact folder.

    <out>/<name>_encoder/      the plan (platform tensorrt_plan) or the ONNX (backend onnxruntime)
    <out>/<name>_preprocess/   Python backend: encoded image bytes -> pixel_values, using the runtime's
                               own preprocessing and the artifact's manifest
    <out>/<name>/              ensemble: IMAGE (bytes) -> preprocess -> encoder -> EMBEDDING
max_batch_size never exceeds the engine profile's (or the manifest's) max batch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from ijepa_deploy.runtime.backends.base import BackendError
from ijepa_deploy.runtime.manifest import Manifest

PREPROCESS_MODEL = '''"""Triton Python backend: encoded image bytes -> I-JEPA pixel_values (ijepa-deploy runtime)."""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from ijepa_deploy.runtime.preprocessing import Preprocessor


class TritonPythonModel:
    def initialize(self, args):
        manifest = json.loads((Path(__file__).parent / "manifest.json").read_text())
        self.preprocessor = Preprocessor(manifest["preprocessing"])

    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
            pixels = self.preprocessor([bytes(x) for x in images])
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("pixel_values", pixels)]))
        return responses
'''


def _dims(shape: list) -> str:
    return "[ " + ", ".join(str(d) if isinstance(d, int) else "-1" for d in shape[1:]) + " ]"


def _tensor(name: str, dtype: str, dims: str) -> str:
    return f'  {{\n    name: "{name}"\n    data_type: {dtype}\n    dims: {dims}\n  }}'


def max_batch_size(manifest: Manifest, precision: str, use_plan: bool) -> int:
    if use_plan:
        return int(manifest.engines[precision]["profiles"][0]["max"][0])
    return int(manifest.batch["max"])


def encoder_config(manifest: Manifest, model_name: str, precision: str, use_plan: bool, instance_kind: str) -> str:
    batch = max_batch_size(manifest, precision, use_plan)
    runtime = 'platform: "tensorrt_plan"' if use_plan else 'backend: "onnxruntime"'
    inputs = ",\n".join(_tensor(i["name"], "TYPE_FP32", _dims(i["shape"])) for i in manifest.io["inputs"])
    outputs = ",\n".join(_tensor(o["name"], "TYPE_FP32", _dims(o["shape"])) for o in manifest.io["outputs"])
    preferred = sorted({min(batch, int(manifest.batch["opt"])), batch})
    return (f'name: "{model_name}"\n{runtime}\nmax_batch_size: {batch}\n'
            f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
            f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
            f"  max_queue_delay_microseconds: 2000\n}}\n"
            f"instance_group [\n  {{\n    count: 1\n    kind: {instance_kind}\n  }}\n]\n")


def preprocess_config(manifest: Manifest, model_name: str, batch: int) -> str:
    pixels = f"[ 3, {manifest.preprocessing['height']}, {manifest.preprocessing['width']} ]"
    return (f'name: "{model_name}"\nbackend: "python"\nmax_batch_size: {batch}\n'
            f"input [\n{_tensor('IMAGE', 'TYPE_STRING', '[ 1 ]')}\n]\n"
            f"output [\n{_tensor('pixel_values', 'TYPE_FP32', pixels)}\n]\n"
            f"instance_group [\n  {{\n    count: 2\n    kind: KIND_CPU\n  }}\n]\n")


def ensemble_config(manifest: Manifest, name: str, preprocess: str, encoder: str, batch: int) -> str:
    embedding = f"[ {manifest.architecture['hidden_size']} ]"
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


def write_triton_repo(folder: Path, out: Path, precision: str = "fp32", prefer_plan: bool = True,
                      instance_kind: str = "KIND_GPU", name: str | None = None) -> Path:
    """Write the repository; returns `out`. Uses the plan when one was built for `precision`."""
    manifest = Manifest.load(folder)
    art = manifest.artifact(precision)
    use_plan = prefer_plan and "file" in manifest.engines.get(precision, {})
    name = name or f"ijepa_{manifest.name}".replace("-", "_")
    encoder, preprocess = f"{name}_encoder", f"{name}_preprocess"
    batch = max_batch_size(manifest, precision, use_plan)
    version = out / encoder / "1"
    version.mkdir(parents=True, exist_ok=True)
    if use_plan:
        shutil.copy(folder / manifest.engines[precision]["file"], version / "model.plan")
    else:
        # Triton's onnxruntime backend loads model.onnx; the external data keeps its recorded name.
        shutil.copy(folder / art["file"], version / "model.onnx")
        if art.get("data_file"):
            shutil.copy(folder / art["data_file"], version / art["data_file"])
    (out / encoder / "config.pbtxt").write_text(encoder_config(manifest, encoder, precision, use_plan, instance_kind))
    (out / preprocess / "1").mkdir(parents=True, exist_ok=True)
    (out / preprocess / "1" / "model.py").write_text(PREPROCESS_MODEL)
    (out / preprocess / "1" / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2))
    (out / preprocess / "config.pbtxt").write_text(preprocess_config(manifest, preprocess, batch))
    (out / name / "1").mkdir(parents=True, exist_ok=True)
    (out / name / "config.pbtxt").write_text(ensemble_config(manifest, name, preprocess, encoder, batch))
    return out


@click.command("triton-repo", epilog="""
\b
Examples:
  ijepa-export triton-repo --artifacts engines/vith14_1k --out model_repository --precision fp16
  tritonserver --model-repository model_repository
""")
@click.option("--artifacts", required=True, type=click.Path(file_okay=False), help="Artifact folder from ijepa-export.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Model repository folder to write.")
@click.option("--precision", default="fp32", show_default=True, help="Which artifact to serve.")
@click.option("--onnx", "force_onnx", is_flag=True, help="Serve the ONNX file even when a plan exists.")
@click.option("--instance-kind", type=click.Choice(["KIND_GPU", "KIND_CPU", "KIND_AUTO"]), default="KIND_GPU",
              show_default=True)
@click.option("--name", help="Model name in the repository (default: ijepa_<artifact name>).")
@click.option("--debug", is_flag=True)
def triton_repo_command(artifacts, out, precision, force_onnx, instance_kind, name, debug):
    """Write a Triton model repository (encoder + preprocessing + ensemble) for an artifact folder."""
    from .cli import run_cli

    def body():
        folder = Path(artifacts)
        try:
            write_triton_repo(folder, Path(out), precision, not force_onnx, instance_kind, name)
        except OSError as exc:
            raise BackendError(f"cannot write the Triton repository to {out}: {exc.strerror or exc}") from None
        click.echo(str(out))

    run_cli(body, debug)
