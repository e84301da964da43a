"""`ijepa-embed`: embed images with an exported artifact folder (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ijepa_deploy.contract.errors import UsageError
from ijepa_deploy.runtime.config import BACKENDS, EmbedConfig
from ijepa_deploy.runtime.preprocessing import parse_size

from .common import CONTEXT, click_entry, quiet_ray, run_cli
from .progress import ProgressLine


@click.command(context_settings=CONTEXT, epilog="""
\b
Examples:
  ijepa-embed --artifacts engines/vith14_1k photos/ --output embeddings.npy
  ijepa-embed --artifacts engines/vith14_1k --precision int8-cpu --similarity cat.jpg dog.jpg
  ijepa-embed --artifacts engines/vith14_1k --output-dir emb/ --shard-size 10000 --resume photos/ list.txt shards.tar
  ijepa-embed --artifacts engines/my-classifier --classify 5 image.png
""")
@click.argument("images", nargs=-1, required=True)
@click.option("--artifacts", required=True, type=click.Path(), help="Artifact folder written by ijepa-export.")
@click.option("--precision", default="fp32", show_default=True,
              help="An exported precision: fp32, fp16, bf16, int8, int8-cpu, fp8.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="auto: a TensorRT plan built for this GPU, else OpenVINO on x86 CPUs when installed, "
                   "else ONNX Runtime.")
@click.option("--providers", help="ONNX Runtime device: cpu, cuda, tensorrt, or a provider list "
                                  "(CUDAExecutionProvider,CPUExecutionProvider).")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads (default: all cores).")
@click.option("--streams", type=click.IntRange(min=1), help="OpenVINO streams (default: OpenVINO's choice).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per batch (default: the artifact's optimal).")
@click.option("--resolution", help="Embed at HxW instead of the native size (dynamic artifacts only), e.g. 448x448.")
@click.option("--output", help="Write (N, D) float32 to this .npy and the ordered inputs to a .json beside it.")
@click.option("--output-dir", type=click.Path(file_okay=False),
              help="Collections: write sharded embeddings (.npy) and metadata (Parquet) here as they are made.")
@click.option("--shard-size", type=click.IntRange(min=1), default=10000, show_default=True,
              help="Images per shard with --output-dir.")
@click.option("--resume", is_flag=True, help="With --output-dir: keep completed shards, redo the rest.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="Stored dtype of sharded embeddings.")
@click.option("--ray", "ray_address", help="With --output-dir: run on a Ray cluster (ADDRESS, or 'local').")
@click.option("--similarity", is_flag=True, help="Print the cosine similarity matrix of the inputs.")
@click.option("--classify", "top_k", type=click.IntRange(min=1), help="Print the top-K labels (artifacts with a head).")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images and list them at the end.")
@click.option("--no-verify", is_flag=True, help="Do not check the artifact files' sha256 before loading.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
def command(images, artifacts, precision, backend, providers, threads, streams, batch_size, resolution, output,
            output_dir, shard_size, resume, dtype, ray_address, similarity, top_k, skip_bad, no_verify, debug):
    """Embed IMAGES (files, folders, path lists, tar shards) with an I-JEPA artifact folder."""

    def body():
        config = EmbedConfig(precision=precision, backend=backend, providers=providers, threads=threads,
                             streams=streams, batch_size=batch_size, verify=not no_verify,
                             resolution=parse_size(resolution) if resolution else None)
        if output and output_dir:
            raise UsageError("--output and --output-dir are exclusive: one file, or a folder of shards")
        if (resume or ray_address) and not output_dir:
            raise UsageError("--resume and --ray need --output-dir")
        progress = ProgressLine()
        try:
            if output_dir:
                from ijepa_deploy.collection import embed_collection

                if ray_address:
                    quiet_ray(debug)
                embed_collection(images, output_dir, artifacts, config=config, shard_size=shard_size, resume=resume,
                                 dtype=dtype, ray_address=ray_address, progress=progress)
            else:
                _embed_in_memory(images, artifacts, config, output, similarity, top_k, skip_bad, progress)
        finally:
            progress.close()

    run_cli(body, debug)


def _embed_in_memory(images, artifacts, config: EmbedConfig, output, similarity, top_k, skip_bad, progress) -> None:
    from ijepa_deploy.collection.npy_output import check_outputs, save_embedded
    from ijepa_deploy.runtime import Embedder
    from ijepa_deploy.runtime.embed_inputs import embed_inputs

    if output:
        check_outputs(output)
    with Embedder.load(artifacts, config=config) as embedder:
        result = embed_inputs(embedder, images, skip_bad=skip_bad, progress=progress)
        progress.close()
        if output:
            npy, sidecar = save_embedded(embedder, result, output)
            click.echo(f"wrote {npy} ({result.vectors.shape[0]} x {result.vectors.shape[1]} float32) and {sidecar}",
                       err=True)
        if similarity:
            _print_similarity(result.inputs, Embedder.similarity(result.vectors))
        if top_k:
            for p, top in zip(result.names, embedder.classify(result.inputs, top_k=top_k)):
                click.echo(f"{p}: " + ", ".join(f"{label} {score:.3f}" for label, score in top))
        if not (output or similarity or top_k):
            click.echo(f"embedded {len(result.inputs)} image(s): {result.vectors.shape[1]}-d vectors (use --output "
                       "FILE.npy to save them)", err=True)
    for name, reason in result.skipped:
        click.echo(f"skipped: {reason}", err=True)


def _print_similarity(paths: list, matrix: np.ndarray) -> None:
    names = [Path(str(p)).name for p in paths]
    width = max(8, *(len(n) for n in names))
    click.echo(" " * width + "".join(f"{i:>9}" for i in range(len(names))))
    for i, (name, row) in enumerate(zip(names, matrix)):
        click.echo(f"{name:<{width}}" + "".join(f"{v:9.4f}" for v in row) + f"   [{i}]")


main = click_entry(command)

if __name__ == "__main__":  # pragma: no cover
    main()
