"""`ijepa-export`: export an I-JEPA checkpoint to validated artifacts, plus its sub-commands."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from ijepa_deploy.reference_model import CheckpointError, UnknownVariantError, load_checkpoint
from ijepa_deploy.runtime.backends.base import BackendError
from ijepa_deploy.runtime.manifest import ManifestError
from ijepa_deploy.runtime.preprocessing import ImageError

from . import progress
from .export import ExportError, ExportOptions, export, parse_resolution
from .progress import stage
from .tensorrt_build import EngineBuildError
from .validation import GateError

USER_ERRORS = (CheckpointError, UnknownVariantError, ExportError, GateError, ManifestError, ImageError,
               BackendError, EngineBuildError)


def run_cli(func, debug: bool):
    """Run a command body: known errors become one line and exit 1, anything else exit 2."""
    try:
        return func()
    except KeyboardInterrupt:
        click.echo("error: interrupted; nothing was written", err=True)
        sys.exit(130)
    except USER_ERRORS as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # an unexpected failure still gets one line unless --debug
        if debug:
            raise
        click.echo(f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                   "(run with --debug for the traceback)", err=True)
        sys.exit(2)


class _ExportGroup(click.Group):
    """`ijepa-export [OPTIONS]` exports; `ijepa-export SUBCOMMAND ...` runs a sub-command."""

    def parse_args(self, ctx, args):
        if not args or args[0] not in self.commands:
            args = ["export", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ExportGroup)
def main():
    """Export I-JEPA to ONNX / TensorRT."""


@main.command("export", context_settings={"help_option_names": ["-h", "--help"]}, epilog="""
\b
Examples:
  ijepa-export --variant vith14 --random-init
  ijepa-export --checkpoint facebook/ijepa_vith14_1k --precision fp32,fp16,int8 --calib-images photos/
  ijepa-export --checkpoint ./my-hf-dir --resolution 224x224 --max-batch 32 --name mymodel
  ijepa-export --checkpoint IN1K-vit.h.14-300e.pth.tar --encoder target --variant vith14
\b
Sub-commands:
  ijepa-export lint FILE.onnx            check an INT8 ONNX against TensorRT's Q/DQ rules
  ijepa-export build-engine --artifacts engines/NAME   build TensorRT plans on this GPU
  ijepa-export triton-repo --artifacts engines/NAME --out DIR   write a Triton model repository
""")
@click.option("--variant", help="Registry variant or alias, e.g. vith14, vith16, vitg16 (vith14 = vith14_1k).")
@click.option("--checkpoint", help="HF folder, .safetensors (+ --variant), original .pth.tar, or Hub id "
                                   "(facebook/ijepa_vith14_1k). Default: the variant's Hub checkpoint.")
@click.option("--random-init", is_flag=True, help="Random weights (seeded) for the variant: no download needed.")
@click.option("--seed", default=0, show_default=True, help="Seed for --random-init, e.g. --seed 3.")
@click.option("--encoder", type=click.Choice(["context", "target"]), default="context", show_default=True,
              help="Which network of an original .pth.tar: context ('encoder', as HF converts) or target (EMA).")
@click.option("--output-dir", default="engines", show_default=True, type=click.Path(file_okay=False),
              help="Parent folder; artifacts land in OUTPUT_DIR/NAME/, e.g. --output-dir /models.")
@click.option("--name", help="Artifact folder name (default: the variant or checkpoint name), e.g. --name ijepa-h14.")
@click.option("--overwrite", is_flag=True, help="Replace an existing artifact folder of the same name.")
@click.option("--precision", default="fp32", show_default=True,
              help="Comma list of fp32, fp16, int8 (TensorRT Q/DQ), int8-cpu (ONNX Runtime CPU), "
                   "e.g. --precision fp32,fp16,int8 (fp32 is always built).")
@click.option("--max-batch", default=8, show_default=True, help="Largest batch validated and profiled, e.g. 32.")
@click.option("--opt-batch", type=int, help="Batch size TensorRT optimizes for (default: --max-batch), e.g. 8.")
@click.option("--resolution", default="dynamic", show_default=True,
              help="'dynamic' (H, W free; position table interpolated in the graph) or HxW baked in, e.g. 224x224.")
@click.option("--opset", default=17, show_default=True, help="ONNX opset, 17..21, e.g. --opset 18.")
@click.option("--calib-images", type=click.Path(), help="Folder of real photos for INT8 calibration (int8 needs it).")
@click.option("--calib-count", default=32, show_default=True, help="Images used for calibration, e.g. 256.")
@click.option("--calib-method", type=click.Choice(["minmax", "percentile", "entropy"]), default="minmax",
              show_default=True, help="INT8 activation range method.")
@click.option("--eval-images", type=click.Path(), help="Held-out photos for the fp16/int8 gates "
                                                        "(default: --calib-images not used for calibration).")
@click.option("--eval-count", default=8, show_default=True, help="Held-out images for the fp16/int8 gates.")
@click.option("--engine", is_flag=True, help="Also build TensorRT plans now (needs TensorRT and a GPU; "
                                             "otherwise recorded as skipped).")
@click.option("--quiet", is_flag=True, help="Only print errors and the final folder.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
def export_command(variant, checkpoint, random_init, seed, encoder, output_dir, name, overwrite, precision,
                   max_batch, opt_batch, resolution, opset, calib_images, calib_count, calib_method, eval_images,
                   eval_count, engine, quiet, debug):
    """Export an I-JEPA encoder to validated ONNX artifacts (fp32, fp16, int8) with a manifest."""
    progress.quiet = quiet

    def body():
        precisions = tuple(dict.fromkeys(["fp32", *[p.strip() for p in precision.split(",") if p.strip()]]))
        options = ExportOptions(
            precisions=precisions, max_batch=max_batch, opt_batch=opt_batch, resolution=parse_resolution(resolution),
            opset=opset, output_dir=Path(output_dir), name=name, overwrite=overwrite,
            calib_images=Path(calib_images) if calib_images else None, calib_count=calib_count,
            calib_method=calib_method, eval_images=Path(eval_images) if eval_images else None, eval_count=eval_count,
        )
        if engine:
            from .tensorrt_build import engine_step

            options.extra_steps.append(engine_step(precisions))
        with stage("load checkpoint"):
            loaded = load_checkpoint(checkpoint, variant=variant, random_init=random_init, seed=seed, encoder=encoder)
        for note in loaded.notes:
            progress.say(f"  {note}")
        folder = export(loaded, options)
        click.echo(str(folder))

    run_cli(body, debug)


@main.command("lint")
@click.argument("onnx_file", type=click.Path())
@click.option("--debug", is_flag=True)
def lint_command(onnx_file, debug):
    """Check an INT8 Q/DQ ONNX file against TensorRT's explicit-quantization rules."""

    def body():
        from .qdq_lint import lint_file

        violations = lint_file(Path(onnx_file))
        for v in violations:
            click.echo(str(v))
        if violations:
            click.echo(f"{len(violations)} violation(s) in {onnx_file}", err=True)
            sys.exit(1)
        click.echo(f"{onnx_file}: Q/DQ lint passed")

    run_cli(body, debug)


from .tensorrt_build import build_engine_command  # noqa: E402
from .triton_repo import triton_repo_command  # noqa: E402

main.add_command(build_engine_command)
main.add_command(triton_repo_command)
