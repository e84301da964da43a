"""`ijepa-embed`: embed images with an exported artifact folder (no torch needed)."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click
import numpy as np

from .backends.base import BackendError
from .embedder import BACKENDS, Embedder
from .manifest import ManifestError
from .preprocessing import ImageError, decode, expand_inputs

USER_ERRORS = (ManifestError, ImageError, BackendError)


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ManifestError(f"--resolution must be HxW like 448x448, got {text!r}") from None
    return h, w


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""
\b
Examples:
  ijepa-embed --artifacts engines/vith14_1k photos/ --output embeddings.npy
  ijepa-embed --artifacts engines/vith14_1k --precision fp16 --similarity cat.jpg dog.jpg
  ijepa-embed --artifacts engines/my-classifier --classify 5 image.png
""")
@click.argument("images", nargs=-1, required=True)
@click.option("--artifacts", required=True, type=click.Path(), help="Artifact folder written by ijepa-export.")
@click.option("--precision", default="fp32", show_default=True, help="fp32, fp16 or int8 (must have been exported).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="auto: a TensorRT plan when usable here, else ONNX Runtime.")
@click.option("--providers", help="ONNX Runtime device: cpu, cuda, tensorrt, or a provider list "
                                  "(CUDAExecutionProvider,CPUExecutionProvider).")
@click.option("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores).")
@click.option("--batch-size", type=int, help="Images per batch (default: the artifact's optimal batch).")
@click.option("--resolution", help="Embed at HxW instead of the native size (dynamic artifacts only).")
@click.option("--output", type=click.Path(dir_okay=False), help="Write (N, D) float32 here (.npy) and the "
                                                                 "ordered inputs beside it (.json).")
@click.option("--similarity", is_flag=True, help="Print the cosine similarity matrix of the inputs.")
@click.option("--classify", "top_k", type=int, help="Print the top-K labels (artifacts with a head).")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images and list them at the end.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
def main(images, artifacts, precision, backend, providers, threads, batch_size, resolution, output, similarity,
         top_k, skip_bad, debug):
    """Embed IMAGES (files or folders) with an I-JEPA artifact folder."""
    try:
        paths = expand_inputs(images)
        bad: list[tuple[Path, str]] = []
        if skip_bad:
            good = []
            for p in paths:
                try:
                    decode(p)
                    good.append(p)
                except ImageError as exc:
                    bad.append((p, str(exc)))
            paths = good
            if not paths:
                raise ImageError("none of the inputs could be read as an image")
        provider_list = providers.split(",") if providers and "," in providers else providers
        embedder = Embedder.load(artifacts, precision, backend, providers=provider_list, threads=threads,
                                 resolution=_parse_size(resolution))
        with embedder:
            vectors = _embed_with_progress(embedder, paths, batch_size)
            if output:
                out = Path(output).with_suffix(".npy")
                np.save(out, vectors)
                out.with_suffix(".json").write_text(json.dumps(
                    {"inputs": [str(p) for p in paths], "artifacts": str(artifacts), "precision": precision,
                     "backend": embedder.backend.name, "dim": int(vectors.shape[1])}, indent=2) + "\n")
                click.echo(f"wrote {out} ({vectors.shape[0]} x {vectors.shape[1]} float32) and {out.with_suffix('.json')}",
                           err=True)
            if similarity:
                _print_similarity(paths, Embedder.similarity(vectors))
            if top_k:
                for p, top in zip(paths, embedder.classify(paths, top_k=top_k, batch_size=batch_size)):
                    click.echo(f"{p}: " + ", ".join(f"{label} {score:.3f}" for label, score in top))
            if not (output or similarity or top_k):
                click.echo(f"embedded {len(paths)} image(s): {vectors.shape[1]}-d vectors (use --output FILE.npy "
                           "to save them)", err=True)
        for p, reason in bad:
            click.echo(f"skipped: {reason}", err=True)
    except USER_ERRORS as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        click.echo(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
        sys.exit(2)


def _embed_with_progress(embedder: Embedder, paths: list[Path], batch_size: int | None) -> np.ndarray:
    if len(paths) < 16 or not sys.stderr.isatty():
        return embedder.embed(paths, batch_size)
    with click.progressbar(length=len(paths), label="embedding", file=sys.stderr) as bar:
        return embedder.embed(paths, batch_size, on_batch=bar.update)


def _print_similarity(paths: list[Path], matrix: np.ndarray) -> None:
    names = [p.name for p in paths]
    width = max(8, *(len(n) for n in names))
    click.echo(" " * width + "".join(f"{i:>9}" for i in range(len(names))))
    for i, (name, row) in enumerate(zip(names, matrix)):
        click.echo(f"{name:<{width}}" + "".join(f"{v:9.4f}" for v in row) + f"   [{i}]")
