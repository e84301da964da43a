"""`ijepa-serve --ray ADDRESS|local`: the same app, routes and answers as a Ray Serve deployment.

Each replica builds the Starlette app of app.py at replica start (`@serve.ingress()` with
`__serve_build_asgi_app__`), loads and warms the artifact before Ray routes traffic to it, and batches
images across requests with Ray Serve's own `@serve.batch` instead of the standalone batcher. Ray Serve
adds replicas, autoscaling (`--replicas` .. `--ray-max-replicas`) and its own backpressure (requests over
`max_queued_requests` get 503 from Ray's proxy). `pip install 'ijepa-deploy[serve-ray]'`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading

import numpy as np

from ijepa_deploy.runtime import UsageError

from .batcher import Admission, NonFiniteOutput, Ticket
from .config import ServeConfig

log = logging.getLogger(__name__)

try:
    from ray import serve
except ImportError:  # pragma: no cover - only without the extra
    serve = None

APP_NAME = "ijepa-serve"


class RayBatcher(Admission):
    """The standalone batcher's interface (admit, embed) over a replica's `@serve.batch` method."""

    def __init__(self, batch_method, max_queue: int, metrics):
        super().__init__(max_queue, metrics)
        self.batch_method = batch_method

    async def embed(self, arrays: list[np.ndarray], ticket: Ticket) -> np.ndarray:
        rows = await asyncio.gather(*(self.batch_method(a) for a in arrays))
        for row in rows:
            if isinstance(row, BaseException):
                raise row
            if not np.isfinite(row).all():
                raise NonFiniteOutput("the model produced NaN/Inf for this image")
        return np.stack(rows)

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def _deployment_class():
    if serve is None:
        raise UsageError("Ray Serve is not installed: pip install 'ijepa-deploy[serve-ray]'")

    @serve.ingress()
    class IJepaServe:
        """One replica: the ijepa-serve app, batching through Ray Serve."""

        def __init__(self, config_json: str):
            self.config = ServeConfig.from_json(config_json)
            self.model = self.metrics = None

        def __serve_build_asgi_app__(self):
            from .app import create_app

            return create_app(self.config, batcher_factory=self._batcher, load_in_background=False)

        def _batcher(self, model, config, metrics):
            self.model, self.metrics = model, metrics
            self.embed_batch.set_max_batch_size(model.max_batch)
            self.embed_batch.set_batch_wait_timeout_s(config.max_wait_ms / 1000)
            return RayBatcher(self.embed_batch, config.max_queue, metrics)

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
        async def embed_batch(self, arrays: list[np.ndarray]) -> list:
            return await asyncio.to_thread(self._compute, arrays)

        def _compute(self, arrays: list[np.ndarray]) -> list:
            import time

            start = time.perf_counter()
            try:
                vectors = list(self.model.embed_arrays(arrays))
            except Exception as exc:  # isolate: one image's failure must not fail its neighbours
                if len(arrays) == 1:
                    return [exc]
                return [row for a in arrays for row in self._compute([a])]
            self.metrics.batch_done(len(arrays), time.perf_counter() - start)
            return vectors

    return IJepaServe


def build_app(config: ServeConfig):
    """The bound Ray Serve application for `config` (for `serve.run` or a Serve config file)."""
    options = {"ray_actor_options": {"num_cpus": config.ray_num_cpus},
               "max_ongoing_requests": config.max_queue, "max_queued_requests": config.max_queue,
               "graceful_shutdown_timeout_s": config.drain_timeout_s, "health_check_timeout_s": 60}
    if config.ray_max_replicas and config.ray_max_replicas > config.replicas:
        options["autoscaling_config"] = {"min_replicas": config.replicas, "max_replicas": config.ray_max_replicas,
                                         "target_ongoing_requests": 2 * (config.max_batch or 8)}
    else:
        options["num_replicas"] = config.replicas
    return serve.deployment(_deployment_class(), name="IJepaServe").options(**options).bind(config.to_json())


def run_on_ray(config: ServeConfig) -> int:
    """Deploy on Ray Serve and keep it up until SIGTERM/SIGINT; then shut Serve down (replicas drain)."""
    app = build_app(config)
    import ray

    try:
        if config.ray_address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=config.ray_address, log_to_driver=False)
    except Exception as exc:
        raise UsageError(f"cannot connect to Ray at {config.ray_address!r}: {str(exc).splitlines()[0][:200]}") from None
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve.start(http_options={"host": config.host, "port": config.port})
        serve.run(app, name=APP_NAME, route_prefix="/")
        log.info("ready on Ray Serve at http://%s:%d (%d replica(s))", config.host, config.port, config.replicas)
        while not stop.wait(0.5):
            pass
        log.info("stopping: Ray Serve replicas drain their requests")
        serve.delete(APP_NAME)
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
