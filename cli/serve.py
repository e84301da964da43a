"""`ijepa-serve`: serve an artifact folder over HTTP in the OpenAI / NV-CLIP NIM embeddings shape."""

from __future__ import annotations

import logging
import sys

import click

from ijepa_deploy.contract.errors import UsageError
from ijepa_deploy.runtime.config import BACKENDS
from ijepa_deploy.serve.config import ServeConfig

from .common import CONTEXT, click_entry, quiet_ray, run_cli


def configure_logging(level: int = logging.INFO) -> None:
    """Server log lines on stderr with time, level and logger; the access log as one JSON object per line
    (no prefix), also on stderr. (Also run in each `--workers` process.)"""
    package = logging.getLogger("ijepa_deploy")  # the commands' plain-line handler gives way to the server's
    for handler in list(package.handlers):
        package.removeHandler(handler)
    package.propagate, package.level = True, logging.NOTSET
    root = logging.getLogger()
    if not any(getattr(h, "_ijepa_serve", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._ijepa_serve = True
        root.addHandler(handler)
    root.setLevel(level)
    access = logging.getLogger("ijepa_deploy.serve.access")
    if not access.handlers:
        plain = logging.StreamHandler(sys.stderr)
        plain.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(plain)
    access.propagate = False


def _check_installed() -> None:
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"ijepa-serve needs {exc.name}: pip install 'ijepa-deploy[serve]'") from None


@click.command(context_settings={**CONTEXT, "show_default": True}, epilog="""
\b
Examples:
  ijepa-serve --artifacts engines/vith14_1k --precision int8-cpu
  ijepa-serve --artifacts engines/vith14_1k --port 8080 --api-key-env IJEPA_API_KEY --workers 2
  ijepa-serve --artifacts engines/vith14_1k --precision int8-cpu --shadow fp32 --shadow-rate 0.01
  ijepa-serve --artifacts engines/vith14_1k --ray local --replicas 2
""")
@click.option("--artifacts", required=True, type=click.Path(), help="Artifact folder written by ijepa-export.")
@click.option("--precision", default="fp32", help="The exported precision to serve.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", help="Inference backend (as ijepa-embed).")
@click.option("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, help="Port to listen on.")
@click.option("--model-name", help="The model id clients send (default: the artifact's name).")
@click.option("--max-batch", type=click.IntRange(min=1), help="Images per backend batch (default: the artifact's "
              "optimal batch).")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, help="How long a partial batch waits for "
              "more images while the backend is idle.")
@click.option("--max-queue", type=click.IntRange(min=1), default=256, help="Images admitted at once (decoding or "
              "waiting); past it requests get 429 with Retry-After.")
@click.option("--pipeline", type=click.IntRange(min=1), default=2, help="Batches in flight: one runs while the "
              "next is prepared.")
@click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=16.0,
              help="Largest request body; larger ones get 413.")
@click.option("--max-pixels", type=click.IntRange(min=1), help="Largest image in pixels (default: the manifest's).")
@click.option("--api-key-env", metavar="NAME", help="Require 'Authorization: Bearer <key>' with the key read from "
              "this environment variable.")
@click.option("--allow-url-host", "allow_url_hosts", multiple=True, metavar="HOST[:PORT]",
              help="Fetch http(s) image URLs from this host (repeatable). Without it URLs are refused.")
@click.option("--workers", type=click.IntRange(min=1), default=1, help="Server processes sharing the port, each "
              "with its own model.")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads per process (default: all cores).")
@click.option("--decode-workers", type=click.IntRange(min=1), help="Image decode threads (default: min(4, cores)).")
@click.option("--warmup-batches", type=click.IntRange(min=0), default=2, help="Warm-up batches before ready.")
@click.option("--drain-timeout", "drain_timeout_s", type=click.FloatRange(min=0), default=30.0,
              help="On SIGTERM, seconds to finish admitted requests before exiting anyway (exit 1).")
@click.option("--shadow", metavar="PRECISION", help="Drift watch: re-embed a sample with this precision (fp32).")
@click.option("--shadow-rate", type=click.FloatRange(0, 1), default=0.0, help="Fraction of images the shadow "
              "re-embeds.")
@click.option("--no-verify", is_flag=True, help="Do not check the artifact files' sha256 before loading.")
@click.option("--no-access-log", is_flag=True, help="No per-request JSON access log lines.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
@click.option("--ray", "ray_address", metavar="ADDRESS|local", help="Deploy on Ray Serve instead (a cluster "
              "address, or 'local').")
@click.option("--replicas", type=click.IntRange(min=1), default=1, help="Ray Serve replicas.")
@click.option("--ray-max-replicas", type=click.IntRange(min=1), help="Ray Serve autoscaling: up to this many "
              "replicas (from --replicas).")
@click.option("--ray-num-cpus", type=click.FloatRange(min=0), default=1.0, help="CPUs each Ray replica reserves.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
def command(debug, log_level, no_verify, no_access_log, **options):
    """Serve an I-JEPA artifact folder: POST /v1/embeddings (OpenAI / NIM shape), health, Prometheus metrics."""

    def body():
        _check_installed()
        config = ServeConfig(verify=not no_verify, access_log=not no_access_log, **options)
        config.api_key()  # a missing key variable is an error now, not in every worker
        level = getattr(logging, log_level.upper())
        configure_logging(level)
        if config.ray_address:
            from ijepa_deploy.serve.ray_serve import run_on_ray

            quiet_ray(debug)
            code = run_on_ray(config)
        elif config.workers > 1:
            from ijepa_deploy.serve.server import run_workers

            code = run_workers(config, configure_logging, level)
        else:
            from ijepa_deploy.serve.server import serve

            code = serve(config)
        if code:
            raise SystemExit(code)

    run_cli(body, debug, interrupted="server stopped")


main = click_entry(command)

if __name__ == "__main__":
    main()
