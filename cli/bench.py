"""`ijepa-bench`: benchmark our runtime against the transformers baseline and the peers, interleaved."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ijepa_deploy.contract.atomic import check_writable, write_atomic

from .common import CONTEXT, click_entry, run_cli


def _split(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


@click.command(context_settings=CONTEXT, epilog="""
\b
Examples:
  ijepa-bench --artifacts engines/vith14_1k --precision fp32,bf16,int8,int8-cpu --batch-sizes 1,8
  ijepa-bench --artifacts engines/vith14_1k --json benchmarks/cpu.json --markdown benchmarks/cpu.md --export-variant vith14
  ijepa-bench --artifacts engines/vith14_1k --collection photos/ --precision int8-cpu --models-off
""")
@click.option("--artifacts", required=True, type=click.Path(file_okay=False), help="Artifact folder from ijepa-export.")
@click.option("--backends", default="onnxruntime,openvino", show_default=True,
              help="Our backends to run: onnxruntime, openvino, tensorrt.")
@click.option("--precision", default="fp32,bf16,int8,int8-cpu", show_default=True, help="Our precisions to run.")
@click.option("--peers/--no-peers", default=True, show_default=True,
              help="Also run torch bf16 autocast and OpenVINO on our files with its default settings.")
@click.option("--batch-sizes", default="1,8", show_default=True)
@click.option("--warmup", default=1, show_default=True, type=click.IntRange(min=0))
@click.option("--iters", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", type=click.IntRange(min=1), help="Threads for every path (default: all cores).")
@click.option("--images", type=click.Path(), help="Photos (default: scikit-image's).")
@click.option("--roofline/--no-roofline", default=True, show_default=True, help="Measure this machine's matmul peaks.")
@click.option("--export-variant", help="Also time `ijepa-export --variant V --random-init` (fp32) and its peak RSS.")
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Peak RSS per path, each in a fresh process at the largest batch size.")
@click.option("--collection", type=click.Path(file_okay=False), help="Also compare sharded output with in-memory "
                                                                     "embedding on this folder of images.")
@click.option("--collection-precision", default="int8-cpu", show_default=True)
@click.option("--models/--models-off", default=True, show_default=True, help="Run the model comparison.")
@click.option("--pause", default=0.5, show_default=True, help="Untimed seconds between runs (worker threads park).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write the results as markdown.")
@click.option("--debug", is_flag=True)
def command(artifacts, backends, precision, peers, batch_sizes, warmup, iters, threads, images, roofline,
            export_variant, memory, collection, collection_precision, models, pause, json_path, md_path, debug):
    """Benchmark our runtime against the transformers baseline and the peers, interleaved, on one machine."""

    def body():
        from ijepa_deploy.bench.report import render_markdown
        from ijepa_deploy.bench.suite import BenchOptions, run_benchmark

        for target in (json_path, md_path):  # before any work: a run can take half an hour
            if target:
                check_writable(Path(target), "benchmark output")
        result = run_benchmark(BenchOptions(
            Path(artifacts), _split(backends), _split(precision), peers, tuple(int(b) for b in _split(batch_sizes)),
            warmup, iters, threads, Path(images) if images else None, roofline, export_variant, memory,
            Path(collection) if collection else None, collection_precision, models, pause,
            "ijepa-bench " + " ".join(sys.argv[1:])))
        text = render_markdown(result)
        if json_path:
            write_atomic(Path(json_path), json.dumps(result, indent=2) + "\n")
        if md_path:
            write_atomic(Path(md_path), text)
        click.echo(text)

    run_cli(body, debug)


main = click_entry(command)

if __name__ == "__main__":  # pragma: no cover
    main()
