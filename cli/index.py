"""`ijepa-index`: search what `ijepa-embed --output-dir` wrote (`pip install 'ijepa-deploy[index]'`).

    ijepa-index build emb/                     # exact inner product on normalised vectors (small collections)
    ijepa-index build emb/ --kind ivfpq        # IVF-PQ beyond --exact-below vectors; recall@10 vs exact reported
    ijepa-index query --artifacts engines/vith14_1k --index emb/ cat.jpg -k 10
"""

from __future__ import annotations

from pathlib import Path

import click

from ijepa_deploy.contract.naming import INDEX_NAME

from .common import click_entry, run_cli

EXACT_BELOW = 100_000


@click.group()
def group():
    """Build and query a FAISS index over an `ijepa-embed --output-dir` collection."""


@group.command("build")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--kind", type=click.Choice(["auto", "flat", "ivfpq"]), default="auto", show_default=True,
              help="auto: exact below --exact-below vectors, IVF-PQ above.")
@click.option("--exact-below", default=EXACT_BELOW, show_default=True, type=click.IntRange(min=1))
@click.option("--nlist", type=click.IntRange(min=1), help="IVF lists (default: 4 sqrt(N)).")
@click.option("--pq-m", type=click.IntRange(min=1), help="PQ sub-quantizers (must divide the embedding size).")
@click.option("--nprobe", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--debug", is_flag=True)
def build_command(folder, kind, exact_below, nlist, pq_m, nprobe, debug):
    """Build FOLDER/index.faiss from the collection in FOLDER."""
    def body():
        from ijepa_deploy.collection.index import build_index

        record = build_index(Path(folder), kind, exact_below=exact_below, nlist=nlist, pq_m=pq_m, nprobe=nprobe)
        recall = f", recall@10 vs exact {record['recall_at_10']:.3f}" if "recall_at_10" in record else ""
        click.echo(f"{record['kind']} index of {record['vectors']} vectors written to {Path(folder) / INDEX_NAME}{recall}")

    run_cli(body, debug)


@group.command("query")
@click.argument("images", nargs=-1, required=True)
@click.option("--artifacts", required=True, type=click.Path(), help="The artifact folder the collection was embedded with.")
@click.option("--index", "folder", required=True, type=click.Path(file_okay=False), help="The collection folder.")
@click.option("--precision", help="Default: the collection's.")
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--debug", is_flag=True)
def query_command(images, artifacts, folder, precision, k, debug):
    """Print the k nearest images of the collection for each query image."""
    def body():
        from ijepa_deploy.collection.index import query

        options = {"precision": precision} if precision else {}
        for image, hits in query(Path(folder), artifacts, list(images), k, **options):
            click.echo(f"{image}:")
            for path, score in hits:
                click.echo(f"  {score:.4f}  {path}")

    run_cli(body, debug)


main = click_entry(group)

if __name__ == "__main__":  # pragma: no cover
    main()
