"""`ijepa-export`: export an I-JEPA checkpoint to validated artifacts, plus its sub-commands.

A thin layer: every command parses its options and calls one library function.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ijepa_deploy.contract.canons import CANONS
from ijepa_deploy.contract.precisions import PRECISIONS, with_fp32
from ijepa_deploy.runtime.preprocessing import parse_size

from .common import click_entry, run_cli

log = logging.getLogger("ijepa_deploy.exporter")

EXPORT_EPILOG = """
\b
Examples:
  ijepa-export --variant vith14 --random-init
  ijepa-export --checkpoint facebook/ijepa_vith14_1k --precision fp32,fp16,int8 --calib-images photos/
  ijepa-export --checkpoint ./my-hf-dir --precision fp32,int8-cpu,bf16 --calib-images c/ --eval-images e/
  ijepa-export --checkpoint ./my-hf-dir --resolution 224x224 --max-batch 32 --name mymodel
  ijepa-export --checkpoint IN1K-vit.h.14-300e.pth.tar --encoder target --variant vith14
  ijepa-export --checkpoint facebook/ijepa_vith14_1k --preprocessing imagenet --name vith14_1k_imagenet
\b
Sub-commands:
  ijepa-export lint FILE.onnx                          check a Q/DQ ONNX against TensorRT's rules
  ijepa-export build-engine --artifacts engines/NAME   build TensorRT plans on this GPU
  ijepa-export register-engine --artifacts engines/NAME PLAN   record a plan built by trtexec
  ijepa-export triton-repo --artifacts engines/NAME --out DIR  write a Triton model repository
"""


class _ExportGroup(click.Group):
    """`ijepa-export [OPTIONS]` exports; `ijepa-export SUBCOMMAND ...` runs a sub-command."""

    def parse_args(self, ctx, args):
        if not args or args[0] not in self.commands:
            args = ["export", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ExportGroup)
def group():
    """Export I-JEPA to ONNX / TensorRT."""


@group.command("export", context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXPORT_EPILOG)
@click.option("--variant", help="Registry variant or alias, e.g. vith14, vith16, vitg16 (vith14 = vith14_1k).")
@click.option("--checkpoint", help="HF folder, .safetensors (+ --variant), original .pth.tar, or Hub id "
                                   "(facebook/ijepa_vith14_1k). Default: the variant's Hub checkpoint.")
@click.option("--random-init", is_flag=True, help="Random weights (seeded) for the variant: no download needed.")
@click.option("--seed", default=0, show_default=True, help="Seed for --random-init, e.g. --seed 3.")
@click.option("--encoder", type=click.Choice(["context", "target"]), default="context", show_default=True,
              help="Which network of an original .pth.tar: context ('encoder', as HF converts) or target (EMA).")
@click.option("--preprocessing", type=click.Choice(CANONS), default=None,
              help="Input canon recorded in the manifest: hf (Hugging Face's processor: bilinear squash, mean = std "
                   "= 0.5) or imagenet (the training canon: bicubic shorter side, center crop, ImageNet mean/std). "
                   "Default: the checkpoint's own (an HF folder's processor; imagenet for original .pth.tar).")
@click.option("--output-dir", default="engines", show_default=True, type=click.Path(file_okay=False),
              help="Parent folder; artifacts land in OUTPUT_DIR/NAME/, e.g. --output-dir /models.")
@click.option("--name", help="Artifact folder name (default: the variant or checkpoint name), e.g. --name ijepa-h14.")
@click.option("--overwrite", is_flag=True, help="Replace an existing artifact folder of the same name.")
@click.option("--precision", default="fp32", show_default=True,
              help=f"Comma list of {', '.join(PRECISIONS)}, e.g. --precision fp32,fp16,int8 (fp32 is always built).")
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(1, 4096),
              help="Largest batch validated and profiled, e.g. 32.")
@click.option("--opt-batch", type=click.IntRange(1, 4096),
              help="Batch size TensorRT optimizes for (default: --max-batch), e.g. 8.")
@click.option("--resolution", default="dynamic", show_default=True,
              help="'dynamic' (H, W free; position table interpolated in the graph) or HxW baked in, e.g. 224x224.")
@click.option("--opset", default=17, show_default=True, type=int, help="ONNX opset, 17..21 (fp8 uses >= 19).")
@click.option("--calib-images", type=click.Path(), help="Folder of real photos for calibration (int8, int8-cpu, fp8).")
@click.option("--calib-count", default=32, show_default=True, type=click.IntRange(min=1),
              help="Images used for calibration, e.g. 256.")
@click.option("--calib-method", type=click.Choice(["minmax", "percentile", "entropy"]), default="minmax",
              show_default=True, help="Activation range method (any number of images).")
@click.option("--calib-batch", default=4, show_default=True, type=click.IntRange(min=1),
              help="Calibration batch size (memory stays flat: statistics are streamed).")
@click.option("--eval-images", type=click.Path(), help="Held-out photos for the low-precision gates "
                                                        "(default: --calib-images not used for calibration).")
@click.option("--eval-count", default=16, show_default=True, type=click.IntRange(min=1),
              help="Held-out images for the gates (16+ for a trustworthy neighbour agreement).")
@click.option("--smooth-alpha", default=0.75, show_default=True, type=click.FloatRange(0, 1),
              help="SmoothQuant strength for outlier channels (share of their excess range moved into the "
                   "weights); 0 turns it off.")
@click.option("--outlier-shift/--no-outlier-shift", default=True, show_default=True,
              help="Shift offset-dominated channels (massive activations) to zero before quantizing.")
@click.option("--mixed-precision/--no-mixed-precision", default=True, show_default=True,
              help="When a quantized artifact misses its gate, keep its most sensitive MatMuls in float.")
@click.option("--min-quantized-fraction", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Mixed precision may keep at most this complement of the FLOPs in float.")
@click.option("--engine", is_flag=True, help="Also build TensorRT plans now (needs TensorRT and a GPU; "
                                             "otherwise recorded as skipped).")
@click.option("--quiet", is_flag=True, help="Only print errors and the final folder.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
def export_command(variant, checkpoint, random_init, seed, encoder, preprocessing, output_dir, name, overwrite,
                   precision, max_batch, opt_batch, resolution, opset, calib_images, calib_count, calib_method, calib_batch,
                   eval_images, eval_count, smooth_alpha, outlier_shift, mixed_precision, min_quantized_fraction, engine,
                   quiet, debug):
    """Export an I-JEPA encoder to validated ONNX artifacts (fp32, fp16, bf16, int8, int8-cpu, fp8) with a manifest."""

    def body():
        from ijepa_deploy.exporter import ExportOptions, export
        from ijepa_deploy.exporter.progress import stage
        from ijepa_deploy.reference_model import load_checkpoint

        precisions = tuple(with_fp32(precision.split(",")))
        options = ExportOptions(
            precisions=precisions, max_batch=max_batch, opt_batch=opt_batch,
            resolution=parse_size(resolution, allow_dynamic=True), opset=opset, output_dir=Path(output_dir), name=name,
            overwrite=overwrite, calib_images=Path(calib_images) if calib_images else None, calib_count=calib_count,
            calib_method=calib_method, calib_batch=calib_batch, eval_images=Path(eval_images) if eval_images else None,
            eval_count=eval_count, smooth_alpha=smooth_alpha or None, outlier_shift=outlier_shift,
            mixed_precision=mixed_precision,
            min_quantized_fraction=min_quantized_fraction, preprocessing=preprocessing)
        if engine:
            from ijepa_deploy.exporter.tensorrt_build import engine_step

            options.extra_steps.append(engine_step(precisions))
        with stage("load checkpoint"):
            loaded = load_checkpoint(checkpoint, variant=variant, random_init=random_init, seed=seed, encoder=encoder)
        for note in loaded.notes:
            log.info("  %s", note)
        folder = export(loaded, options)
        click.echo(str(folder))

    run_cli(body, debug, interrupted="interrupted; nothing was written", quiet=quiet)


@group.command("lint")
@click.argument("onnx_file", type=click.Path())
@click.option("--debug", is_flag=True)
def lint_command(onnx_file, debug):
    """Check a Q/DQ ONNX file (int8 or fp8) against TensorRT's explicit-quantization rules."""

    def body():
        from ijepa_deploy.exporter.qdq_lint import lint_file

        violations = lint_file(Path(onnx_file))
        for v in violations:
            click.echo(str(v))
        if violations:
            click.echo(f"{len(violations)} violation(s) in {onnx_file}", err=True)
            sys.exit(1)
        click.echo(f"{onnx_file}: Q/DQ lint passed")

    run_cli(body, debug)


@group.command("build-engine", epilog="""
\b
Examples:
  ijepa-export build-engine --artifacts engines/vith14_1k --precision fp16,int8
  ijepa-export build-engine --artifacts engines/vith14_1k --max-batch 32 --opt-batch 8 --workspace 8
  ijepa-export build-engine --artifacts engines/vith14_1k --precision int8 --profiles 1-4,8-32
  ijepa-export build-engine --artifacts engines/vith14_1k --precision fp16 --strip-weights
""")
@click.option("--artifacts", required=True, type=click.Path(file_okay=False), help="Artifact folder from ijepa-export.")
@click.option("--precision", help="Comma list (default: every exported precision TensorRT can build, except fp32).")
@click.option("--min-batch", type=click.IntRange(1, 4096), help="Profile minimum batch (default: manifest).")
@click.option("--opt-batch", type=click.IntRange(1, 4096), help="Profile optimal batch (default: manifest).")
@click.option("--max-batch", type=click.IntRange(1, 4096), help="Profile maximum batch (default: manifest).")
@click.option("--profiles", help="Batch buckets, one optimization profile each: MIN-MAX[@OPT][xCOPIES], comma "
                                 "separated, e.g. 1-4,8-32 (xN: N contexts may run that bucket at once).")
@click.option("--min-resolution", help="Profile minimum HxW for dynamic artifacts, e.g. 112x112.")
@click.option("--max-resolution", help="Profile maximum HxW for dynamic artifacts, e.g. 448x448.")
@click.option("--workspace", default=4.0, show_default=True, type=click.FloatRange(0.1, 1024),
              help="Builder workspace in GB.")
@click.option("--opt-level", type=click.IntRange(0, 5), default=3, show_default=True, help="Builder optimization level.")
@click.option("--device", default=0, show_default=True, type=click.IntRange(min=0), help="CUDA device to build on.")
@click.option("--tf32/--no-tf32", default=False, show_default=True,
              help="Allow TF32 in fp32 plans (faster on Ampere+, about 1e-3 relative error). Other precisions "
                   "always keep it: their float layers are typed by the ONNX file.")
@click.option("--version-compatible", is_flag=True,
              help="Plan runs on later TensorRT versions too (10.x plans on 11.x included); slower to load.")
@click.option("--hardware-compatible", is_flag=True, help="Plan runs on any Ampere or newer GPU (slower; not fp8).")
@click.option("--strip-weights", is_flag=True,
              help="Weight-stripped plan: refitted from the artifact's ONNX when loaded (one set of weights, plans "
                   "for many GPUs).")
@click.option("--allow-float-gemms", is_flag=True,
              help="Keep a quantized plan whose quantized GEMMs run in float (warn instead of refusing).")
@click.option("--debug", is_flag=True)
def build_engine_command(artifacts, precision, min_batch, opt_batch, max_batch, profiles, min_resolution,
                         max_resolution, workspace, opt_level, device, tf32, version_compatible, hardware_compatible,
                         strip_weights, allow_float_gemms, debug):
    """Build TensorRT plans for an artifact folder on this machine's GPU and record them in its manifest."""

    def body():
        from ijepa_deploy.exporter.tensorrt_build import build_engine_cli

        for path in build_engine_cli(
                Path(artifacts), [p.strip() for p in precision.split(",")] if precision else None,
                batch=(min_batch, opt_batch, max_batch), profiles=profiles,
                resolution=(parse_size(min_resolution, what="--min-resolution") if min_resolution else None,
                            parse_size(max_resolution, what="--max-resolution") if max_resolution else None),
                workspace_gb=workspace, opt_level=opt_level, device=device, tf32=tf32,
                version_compatible=version_compatible, hardware_compatible=hardware_compatible,
                strip_weights=strip_weights, allow_float_gemms=allow_float_gemms):
            click.echo(str(path))

    run_cli(body, debug)


@group.command("register-engine", epilog="""
\b
Examples:
  ijepa-export register-engine --artifacts engines/vith14_1k engines/vith14_1k/model_fp16.nvidia-orin.trt10.3.plan
""")
@click.option("--artifacts", required=True, type=click.Path(file_okay=False), help="Artifact folder from ijepa-export.")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--precision", help="The plan's precision (default: read from its file name, model_<precision>.…).")
@click.option("--device", default=0, show_default=True, type=click.IntRange(min=0), help="CUDA device to gate on.")
@click.option("--version-compatible", is_flag=True, help="The plan was built with --versionCompatible.")
@click.option("--stripped/--not-stripped", default=None,
              help="The plan was built with --stripWeights (default: read from its file name, ….stripped.plan).")
@click.option("--allow-float-gemms", is_flag=True,
              help="Record a quantized plan whose quantized GEMMs run in float (warn instead of refusing).")
@click.option("--debug", is_flag=True)
def register_engine_command(artifacts, plan, precision, device, version_compatible, stripped, allow_float_gemms,
                            debug):
    """Record a plan built elsewhere (trtexec, build_engines.sh) in the manifest, after gating it on this GPU."""

    def body():
        from ijepa_deploy.exporter.tensorrt_register import register_engine

        click.echo(str(register_engine(Path(artifacts), Path(plan), precision=precision, device=device,
                                       version_compatible=version_compatible, stripped=stripped,
                                       allow_float_gemms=allow_float_gemms)))

    run_cli(body, debug)


@group.command("triton-repo", epilog="""
\b
Examples:
  ijepa-export triton-repo --artifacts engines/vith14_1k --out model_repository --precision fp16
  tritonserver --model-repository model_repository
""")
@click.option("--artifacts", required=True, type=click.Path(file_okay=False), help="Artifact folder from ijepa-export.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Model repository folder to write.")
@click.option("--precision", default="fp32", show_default=True, help="Which artifact to serve.")
@click.option("--onnx", "force_onnx", is_flag=True, help="Serve the ONNX file even when a plan exists.")
@click.option("--gpu", help="Serve the plan built for this GPU (name or slug; default: the only one, or the newest).")
@click.option("--instance-kind", type=click.Choice(["KIND_GPU", "KIND_CPU", "KIND_AUTO"]), default=None,
              help="Where encoder instances run (default: KIND_GPU for plans, KIND_CPU for ONNX).")
@click.option("--name", help="Model name in the repository (default: ijepa_<artifact name>).")
@click.option("--target-tensorrt", help="TensorRT version of the serving Triton container, e.g. 10.13.3 (default: "
                                        "$TRT_VERSION, which NGC containers set): a plan built for another is refused.")
@click.option("--debug", is_flag=True)
def triton_repo_command(artifacts, out, precision, force_onnx, gpu, instance_kind, name, target_tensorrt, debug):
    """Write a Triton model repository (encoder + preprocessing + ensemble) for an artifact folder."""

    def body():
        from ijepa_deploy.exporter.triton_repo import write_triton_repo

        click.echo(str(write_triton_repo(Path(artifacts), Path(out), precision, prefer_plan=not force_onnx, gpu=gpu,
                                         instance_kind=instance_kind, name=name, target_tensorrt=target_tensorrt)))

    run_cli(body, debug)


main = click_entry(group)

if __name__ == "__main__":  # pragma: no cover
    main()
