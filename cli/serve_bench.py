"""`python -m ijepa_deploy.cli.serve_bench`: ijepa-serve's served images/s and p50/p99 latency at each
concurrency against offline `Embedder.embed` at the same batch size, interleaved, in one run."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

from ijepa_deploy.contract.atomic import write_atomic

from .common import CONTEXT, click_entry, run_cli


@click.command(context_settings={**CONTEXT, "show_default": True})
@click.option("--artifacts", required=True, type=click.Path(file_okay=False))
@click.option("--precision", default="int8-cpu")
@click.option("--backend", default="auto")
@click.option("--images", type=click.Path(), help="Photos (default: scikit-image's).")
@click.option("--concurrency", default="1,8,32", help="Comma-separated client thread counts.")
@click.option("--requests", "per_level", default=4, type=click.IntRange(min=1),
              help="Requests per level = this x max(concurrency, batch).")
@click.option("--rounds", default=1, type=click.IntRange(min=1), help="Offline passes over the images, each time.")
@click.option("--max-wait-ms", default=5.0)
@click.option("--out", "out", type=click.Path(), help="Write OUT.json and OUT.md.")
@click.option("--debug", is_flag=True)
def command(artifacts, precision, backend, images, concurrency, per_level, rounds, max_wait_ms, out, debug):
    """Served images/s and p50/p99 latency at each concurrency vs offline Embedder.embed at the same batch."""

    def body():
        from ijepa_deploy.bench.extras import bench_photos
        from ijepa_deploy.bench.serve_load import bench_serving, render

        log = Path(out + ".server.log") if out else Path(tempfile.gettempdir()) / "ijepa-serve-bench.server.log"
        result = bench_serving(artifacts, precision, backend, bench_photos(Path(images) if images else None),
                               [int(c) for c in concurrency.split(",")], per_level, rounds, max_wait_ms, log,
                               "python -m ijepa_deploy.cli.serve_bench " + " ".join(sys.argv[1:]))
        click.echo(render(result))
        if out:
            write_atomic(Path(out + ".json"), json.dumps(result, indent=2) + "\n")
            write_atomic(Path(out + ".md"), render(result))

    run_cli(body, debug)


main = click_entry(command)

if __name__ == "__main__":  # pragma: no cover
    main()
