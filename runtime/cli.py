"""`ijepa-embed`: embed images with an exported artifact folder (no torch needed)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import click
import numpy as np

from .atomic import check_writable, replace_together
from .backends import BACKENDS
from .embedder import Embedder
from .errors import ImageError, UsageError, click_entry, run_cli
from .preprocessing import describe, parse_size
from .shards import Progress


def output_paths(output: str) -> tuple[Path, Path]:
    """The exact `.npy` path the user gave (`.npy` appended only when the name has no suffix) and
    its sidecar (`x.npy` -> `x.json`, any other name -> `name.json` appended)."""
    path = Path(output)
    if path.name in ("", ".", "..") or path.name.endswith("/"):
        raise UsageError(f"--output {output!r} is not a file name")
    if not path.suffix:
        path = path.with_name(path.name + ".npy")
    sidecar = path.with_suffix(".json") if path.suffix == ".npy" else path.with_name(path.name + ".json")
    return path, sidecar


def write_embeddings(npy: Path, sidecar: Path, vectors: np.ndarray, record: dict) -> None:
    """The `.npy` and its JSON sidecar as one unit (the sidecar records the `.npy`'s sha256)."""
    buffer = io.BytesIO()
    np.save(buffer, vectors, allow_pickle=False)
    data = buffer.getvalue()
    record = {**record, "npy": npy.name, "sha256": hashlib.sha256(data).hexdigest(),
              "shape": list(vectors.shape), "dtype": str(vectors.dtype)}
    text = json.dumps(record, indent=2) + "\n"
    replace_together({npy: lambda fh: fh.write(data), sidecar: lambda fh: fh.write(text.encode())})


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""
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
        size = parse_size(resolution) if resolution else None
        if output and output_dir:
            raise UsageError("--output and --output-dir are exclusive: one file, or a folder of shards")
        if (resume or ray_address) and not output_dir:
            raise UsageError("--resume and --ray need --output-dir")
        if output_dir:
            from .shards import embed_collection

            embed_collection(images, Path(output_dir), artifacts, precision=precision, backend=backend,
                             batch_size=batch_size, shard_size=shard_size, resume=resume, dtype=dtype,
                             ray_address=ray_address, verify=not no_verify, threads=threads, resolution=size,
                             providers=providers)
            return
        npy = sidecar = None
        if output:
            npy, sidecar = output_paths(output)
            check_writable(npy)
            check_writable(sidecar)
        from .sources import expand_sources

        paths = expand_sources(images)
        openvino = {"streams": streams} if streams else None
        with Embedder.load(artifacts, precision, backend, providers=providers, threads=threads, resolution=size,
                           verify=not no_verify, openvino=openvino) as embedder:
            kept, bad, parts = [], [], []
            progress = Progress(len(paths), 0)
            try:
                for prepared, values in embedder.run_batches(paths, batch_size, skip_bad=skip_bad):
                    for item, ok, error in zip(prepared.inputs, prepared.ok, prepared.errors):
                        (kept if ok else bad).append(item if ok else (item, error))
                    if len(values):
                        parts.append(values)
                    progress.update(len(prepared.inputs))
            finally:
                progress.close()
            if not kept:
                raise ImageError("none of the inputs could be read as an image")
            vectors = np.concatenate(parts)
            if npy is not None:
                write_embeddings(npy, sidecar, vectors, {
                    "inputs": [describe(p) for p in kept], "skipped": [[describe(p), e] for p, e in bad],
                    "artifacts": str(artifacts), "name": embedder.manifest.name, "precision": precision,
                    "artifact_sha256": embedder.manifest.artifact(precision).files[0].sha256,
                    "backend": embedder.backend.describe(), "dim": int(vectors.shape[1])})
                click.echo(f"wrote {npy} ({vectors.shape[0]} x {vectors.shape[1]} float32) and {sidecar}", err=True)
            if similarity:
                _print_similarity(kept, Embedder.similarity(vectors))
            if top_k:
                for p, top in zip(kept, embedder.classify(kept, top_k=top_k, batch_size=batch_size)):
                    click.echo(f"{p}: " + ", ".join(f"{label} {score:.3f}" for label, score in top))
            if not (output or similarity or top_k):
                click.echo(f"embedded {len(kept)} image(s): {vectors.shape[1]}-d vectors (use --output FILE.npy "
                           "to save them)", err=True)
        for p, reason in bad:
            click.echo(f"skipped: {reason}", err=True)

    run_cli(body, debug)


main = click_entry(command)


def _print_similarity(paths: list, matrix: np.ndarray) -> None:
    names = [Path(str(p)).name for p in paths]
    width = max(8, *(len(n) for n in names))
    click.echo(" " * width + "".join(f"{i:>9}" for i in range(len(names))))
    for i, (name, row) in enumerate(zip(names, matrix)):
        click.echo(f"{name:<{width}}" + "".join(f"{v:9.4f}" for v in row) + f"   [{i}]")
