"""The ASGI app (Starlette): routes, auth, body limit, readiness, metrics and access log, lifecycle.

The model loads in the background after the server starts listening, so `/v1/health/live` answers at once
and `/v1/health/ready` and `/v1/embeddings` answer 503 until the artifact is verified, loaded and warm.
`Service.begin_drain()` (SIGTERM, see server.py) turns new embedding requests away with 503 while every
admitted one is answered.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Callable

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ijepa_deploy.runtime import Manifest

from . import errors
from .batcher import DynamicBatcher, NonFiniteOutput, QueueFull
from .config import ServeConfig
from .decoding import Decoder, default_decode_workers, parse_inputs
from .metrics import ServeMetrics
from .model import ServedModel

log = logging.getLogger(__name__)
access_log = logging.getLogger("ijepa_deploy.serve.access")

IDENTITY_HEADER = "X-Ijepa-Identity"
ROUTES = ("/v1/embeddings", "/v1/models", "/v1/health/live", "/v1/health/ready", "/metrics")
BatcherFactory = Callable[[ServedModel, ServeConfig, ServeMetrics], object]


def default_batcher(model: ServedModel, config: ServeConfig, metrics: ServeMetrics) -> DynamicBatcher:
    return DynamicBatcher(model.prepare, model.infer, max_batch=model.max_batch, max_wait_s=config.max_wait_ms / 1000,
                          max_queue=config.max_queue, pipeline=config.pipeline, metrics=metrics)


class Service:
    """Everything one app instance holds: the model, the decoder, the batcher, the shadow and the phase."""

    def __init__(self, config: ServeConfig, batcher_factory: BatcherFactory = default_batcher,
                 on_fatal: Callable[[BaseException], None] | None = None):
        self.config = config
        self.manifest = Manifest.load(config.artifacts)  # fail fast on a bad folder, before listening
        self.manifest.artifact(config.precision)
        if config.shadow:
            self.manifest.artifact(config.shadow)
        self.name = config.model_name or self.manifest.name
        self.api_key = config.api_key()
        self.metrics = ServeMetrics(self.manifest.batch.max)
        self.batcher_factory, self.on_fatal = batcher_factory, on_fatal
        self.phase = "loading"
        self.load_error: BaseException | None = None
        self.model: ServedModel | None = None
        self.decoder: Decoder | None = None
        self.batcher = None
        self.shadow = None
        self.active = 0
        self.created = int(time.time())
        self._drained = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def load(self) -> None:
        """Load and warm the model (and the shadow) off the event loop, then report ready."""
        try:
            self.model = await asyncio.to_thread(ServedModel.load, self.config)
            cfg, model = self.config, self.model
            self.decoder = Decoder(model.embedder.preprocessor, workers=cfg.decode_workers or default_decode_workers(),
                                   max_pixels=min(cfg.max_pixels or 1 << 62, self.manifest.preprocessing.max_pixels),
                                   max_bytes=cfg.max_body_bytes, allow_hosts=cfg.allow_url_hosts,
                                   url_timeout_s=cfg.url_timeout_s)
            if cfg.shadow and cfg.shadow_rate > 0:
                from .shadow import ShadowWatch

                shadow_model = await asyncio.to_thread(ServedModel.load, cfg, cfg.shadow, 1)
                self.shadow = ShadowWatch(shadow_model, cfg.shadow_rate, self.metrics)
            self.batcher = self.batcher_factory(model, cfg, self.metrics)
            self.batcher.start()
        except asyncio.CancelledError:  # shut down while loading
            raise
        except BaseException as exc:
            self.phase, self.load_error = "failed", exc
            log.error("could not load %s (%s): %s", self.config.artifacts, self.config.precision, exc)
            if self.on_fatal:
                self.on_fatal(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.metrics.model.info(model.describe())
        self.metrics.load_seconds.set(model.load_seconds)
        if self.phase == "loading":
            self.phase = "ready"
            self.metrics.ready.set(1)
        log.info("ready: %s %s on %s, batch %d, loaded and warmed up in %.1f s", self.name, model.embedder.precision,
                 model.embedder.backend.describe(), model.max_batch, model.load_seconds)

    def begin_drain(self) -> None:
        """Refuse new embedding requests (503) and report not ready; admitted requests still complete."""
        if self.phase != "draining":
            log.info("draining: %d request(s) in flight", self.active)
        self.phase = "draining"
        self.metrics.ready.set(0)
        if self.active == 0:
            self._drained.set()

    async def drained(self) -> None:
        await self._drained.wait()

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        if self.shadow is not None:
            await asyncio.to_thread(self.shadow.close)
        if self.decoder is not None:
            self.decoder.close()
        if self.model is not None:
            self.model.close()

    # ------------------------------------------------------------------ request checks

    def authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        if not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise errors.unauthorized("incorrect API key provided")

    def check_ready(self) -> None:
        if self.phase == "ready":
            return
        if self.phase == "loading":
            raise errors.unavailable("the model is loading; retry shortly (GET /v1/health/ready)", "model_loading",
                                     retry_after=2)
        if self.phase == "draining":
            raise errors.unavailable("the server is shutting down; send the request to another replica",
                                     "draining", retry_after=1)
        raise errors.unavailable("the model failed to load; see the server log", "model_failed")

    def request_done(self) -> None:
        self.active -= 1
        if self.phase == "draining" and self.active == 0:
            self._drained.set()


# ---------------------------------------------------------------------- handlers


async def read_json(request: Request, limit: int) -> dict:
    """The request body as a JSON object, refusing bodies over `limit` bytes as they stream in."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        if int(declared) <= DISCARD_LIMIT:
            await _discard(request, 0)
        raise errors.too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            await _discard(request, size)
            raise errors.too_large(None, limit)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.bad_request(f"the body is not valid JSON ({exc})", "invalid_json") from None
    if not isinstance(body, dict):
        raise errors.bad_request("the body must be a JSON object", "invalid_json")
    return body


DISCARD_LIMIT = 64 * 1024 * 1024


async def _discard(request: Request, seen: int) -> None:
    """Read and drop the rest of an oversized body (at most 64 MiB) before answering 413: a client still
    sending when the connection closes sees a reset instead of the answer. Larger bodies are cut off."""
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > DISCARD_LIMIT:
            return


async def _discard_unread(request: Request) -> None:
    """An error answered before the body was read (401, 503): read it first, so that the client, still
    sending, gets the answer instead of a broken pipe."""
    declared = request.headers.get("content-length", "")
    if request.method != "POST" or (declared.isdigit() and int(declared) > DISCARD_LIMIT):
        return
    try:
        await _discard(request, 0)
    except (RuntimeError, ClientDisconnect):  # already read, or the client left
        pass


def check_body(service: Service, body: dict) -> str:
    """Validate the request's model and options; returns the encoding format."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise errors.bad_request("'model' is required (see GET /v1/models)", "invalid_model", "model")
    if model != service.name:
        raise errors.model_not_found(model, service.name)
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise errors.bad_request(f"encoding_format must be 'float' or 'base64', got {fmt!r}",
                                 "invalid_encoding_format", "encoding_format")
    dims = body.get("dimensions")
    if dims is not None and dims != service.model.dim:
        raise errors.bad_request(f"this model's embeddings have {service.model.dim} dimensions; 'dimensions' "
                                 f"{dims!r} is not supported", "invalid_dimensions", "dimensions")
    return fmt


async def embeddings(request: Request) -> Response:
    service: Service = request.app.state.service
    service.authorize(request)
    service.check_ready()
    if service.active >= service.config.max_queue:  # bounds the bodies held too: each request has an image
        service.metrics.rejected.labels("queue_full").inc()
        raise errors.queue_full(service.batcher.retry_after())
    service.active += 1
    try:
        return await _embed(service, request)
    finally:
        service.request_done()


async def _embed(service: Service, request: Request) -> Response:
    body = await read_json(request, service.config.max_body_bytes)
    fmt = check_body(service, body)
    items = parse_inputs(body, service.config.max_queue)
    request.scope["ijepa.images"] = len(items)
    try:
        with service.batcher.admit(len(items)) as ticket:
            start = time.perf_counter()
            arrays = await service.decoder.decode_all(items)
            service.metrics.decode_seconds.observe(time.perf_counter() - start)
            vectors = await service.batcher.embed(arrays, ticket)
    except QueueFull as exc:
        service.metrics.rejected.labels("queue_full").inc()
        raise errors.queue_full(exc.retry_after) from None
    except NonFiniteOutput as exc:
        raise errors.server_error(f"{exc}; the artifact may be damaged or its precision unsuited") from None
    if service.shadow is not None:
        service.shadow.offer(arrays, vectors)
    # the artifact identity beside the OpenAI shape: clients that store vectors can refuse to mix two models
    return JSONResponse(embedding_payload(vectors, fmt, service.name, service.model.tokens_per_image),
                        headers={IDENTITY_HEADER: service.model.identity})


def embedding_payload(vectors: np.ndarray, fmt: str, name: str, tokens_per_image: int) -> dict:
    """The OpenAI embeddings response; base64 is little-endian float32, as the OpenAI client decodes it."""
    if fmt == "base64":
        values = [base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode() for v in vectors]
    else:
        values = [v.tolist() for v in vectors.astype(np.float32)]
    tokens = len(vectors) * tokens_per_image
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(values)]
    return {"object": "list", "data": data, "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def models(request: Request) -> Response:
    service: Service = request.app.state.service
    service.authorize(request)
    entry = {"id": service.name, "object": "model", "created": service.created, "owned_by": "ijepa-deploy",
             "artifact": service.manifest.name, "precision": service.config.precision,
             "identity": service.manifest.artifact(service.config.precision).identity,
             "dim": service.manifest.hidden_size, "ready": service.phase == "ready"}
    wanted = request.path_params.get("model")
    if wanted is not None:
        if wanted != service.name:
            raise errors.model_not_found(wanted, service.name)
        return JSONResponse(entry)
    return JSONResponse({"object": "list", "data": [entry]})


async def live(request: Request) -> Response:
    return JSONResponse({"object": "health.response", "status": "live", "message": "Service is live."})


async def ready(request: Request) -> Response:
    service: Service = request.app.state.service
    service.check_ready()
    return JSONResponse({"object": "health.response", "status": "ready", "message": "Service is ready."})


async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.service.metrics.render()
    return Response(body, media_type=content_type)


def _api(handler):
    """Every error of a handler becomes an OpenAI-shaped JSON answer; unexpected ones a logged 500."""
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except errors.APIError as exc:
            await _discard_unread(request)
            return exc.response()
        except ClientDisconnect:  # nobody is left to answer; logged as 499, as nginx does
            return Response(status_code=499)
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.url.path)
            return errors.server_error("internal error; see the server log").response()

    return wrapped


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        return errors.not_found(request.url.path).response()
    kind = "method_not_allowed" if exc.status_code == 405 else "http_error"
    return errors.APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=kind).response()


class Observe:
    """Pure ASGI middleware: request id, request metrics by route and status, one JSON access-log line."""

    def __init__(self, app, service: Service, access: bool):
        self.app, self.service, self.access = app, service, access

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        status = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._record(scope, status[0], time.perf_counter() - start, request_id)

    def _record(self, scope, status: int, seconds: float, request_id: str) -> None:
        path = scope.get("path", "")
        route = path if path in ROUTES else ("/v1/models/{model}" if path.startswith("/v1/models/") else "other")
        labels = (route, scope.get("method", ""), str(status))
        self.service.metrics.requests.labels(*labels).inc()
        self.service.metrics.request_seconds.labels(*labels).observe(seconds)
        if self.access:
            client = scope.get("client") or ("", 0)
            access_log.info(json.dumps({
                "ts": round(time.time(), 3), "request_id": request_id, "client": f"{client[0]}:{client[1]}",
                "method": scope.get("method"), "path": path, "status": status, "ms": round(seconds * 1000, 2),
                "images": scope.get("ijepa.images", 0)}))


def create_app(config: ServeConfig, *, batcher_factory: BatcherFactory = default_batcher,
               on_fatal: Callable[[BaseException], None] | None = None, load_in_background: bool = True) -> Starlette:
    """The app for `config`. `load_in_background=False` loads inside the lifespan startup (Ray Serve, where
    a replica takes traffic only once it started); otherwise the server listens while it loads."""
    service = Service(config, batcher_factory, on_fatal)

    @asynccontextmanager
    async def lifespan(app):
        service._drained = asyncio.Event()  # bound to the serving loop
        task = asyncio.get_running_loop().create_task(service.load())
        if not load_in_background:
            await task
            if service.load_error is not None:  # the replica must not start
                raise service.load_error
        try:
            yield
        finally:
            if not task.done():
                task.cancel()
            await service.close()

    routes = [Route("/v1/embeddings", _api(embeddings), methods=["POST"]),
              Route("/v1/models", _api(models), methods=["GET"]),
              Route("/v1/models/{model:path}", _api(models), methods=["GET"]),
              Route("/v1/health/live", _api(live), methods=["GET"]),
              Route("/v1/health/ready", _api(ready), methods=["GET"]),
              Route("/metrics", _api(metrics), methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.service = service
    app.add_middleware(Observe, service=service, access=config.access_log)
    return app
