"""Running the app under uvicorn: SIGTERM drains (no new requests, every admitted one answered, exit 0),
and `--workers N` runs N independent processes on one listening socket.

Each worker loads its own Embedder: workers share nothing but the artifact folder and the socket. The
parent forwards SIGTERM to every worker and exits with the first failure among them, or 0.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket

import uvicorn

from ijepa_deploy.runtime import UsageError

from .app import create_app
from .config import ServeConfig

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT drains the app before shutting down; a second one
    stops at once."""

    def __init__(self, config: uvicorn.Config, drain_timeout_s: float):
        super().__init__(config)
        self.drain_timeout_s = drain_timeout_s
        self.exit_code = 0
        self.service = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame) -> None:
        # Not recorded in _captured_signals: uvicorn would re-raise it after shutdown, and the process
        # would die by the signal instead of exiting 0 after a clean drain. Only a second SIGINT (Ctrl-C
        # twice) cuts the drain short: with --workers, Ctrl-C reaches a worker both from the terminal and
        # forwarded by the parent as SIGTERM.
        if self._draining or self.service is None or self._loop is None:
            self.force_exit = self._draining and sig == signal.SIGINT
            self.should_exit = self.should_exit or not self._draining or self.force_exit
            return
        self._draining = True
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain(sig)))

    async def _drain(self, sig: int) -> None:
        log.info("received %s: draining (at most %.0f s)", signal.Signals(sig).name, self.drain_timeout_s)
        self.service.begin_drain()
        try:
            await asyncio.wait_for(self.service.drained(), self.drain_timeout_s)
        except asyncio.TimeoutError:
            log.error("drain timeout: %d request(s) still in flight are cut off", self.service.active)
            self.exit_code = 1
        self.should_exit = True

    def fatal(self, exc: BaseException) -> None:
        self.exit_code = 1
        self.should_exit = True


def uvicorn_config(app, config: ServeConfig, **kwargs) -> uvicorn.Config:
    return uvicorn.Config(app, host=config.host, port=config.port, log_config=None, access_log=False,
                          lifespan="on", timeout_graceful_shutdown=int(config.drain_timeout_s) + 1,
                          server_header=False, **kwargs)


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a busy port is one clear error, before the model loads."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port or "
                         "--host") from None
    sock.set_inheritable(True)
    return sock


def serve(config: ServeConfig, sockets: list[socket.socket] | None = None) -> int:
    """Run one server process until it is told to stop; returns its exit code."""
    sockets = sockets or [listen(config.host, config.port)]
    server = DrainingServer(uvicorn_config(None, config), config.drain_timeout_s)
    app = create_app(config, on_fatal=server.fatal)
    server.config.app = app
    server.service = app.state.service
    server.run(sockets=sockets)
    if not server.started and server.exit_code == 0:
        return 1
    return server.exit_code


def _worker(config_json: str, sock: socket.socket, configure_logging, log_level: int) -> None:
    if configure_logging is not None:  # a spawned process starts with no logging configuration
        configure_logging(log_level)
    raise SystemExit(serve(ServeConfig.from_json(config_json), sockets=[sock]))


def run_workers(config: ServeConfig, configure_logging=None, log_level: int = logging.INFO) -> int:
    """`config.workers` server processes on one socket; SIGTERM/SIGINT drain them all. Each worker calls
    `configure_logging(log_level)` first (a module-level function: it travels to spawned processes)."""
    sock = listen(config.host, config.port)
    context = multiprocessing.get_context("spawn")
    args = (config.to_json(), sock, configure_logging, log_level)
    workers = [context.Process(target=_worker, args=args, name=f"ijepa-serve-{i}") for i in range(config.workers)]
    stopping = []

    def forward(sig, frame):
        stopping.append(sig)
        for process in workers:
            if process.pid and process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM if len(stopping) == 1 else signal.SIGKILL)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for process in workers:
            process.start()
        log.info("started %d workers on %s:%d", len(workers), config.host, sock.getsockname()[1])
        code = 0
        while any(p.exitcode is None for p in workers):
            for process in workers:
                process.join(timeout=0.2)
                if process.exitcode not in (None, 0) and not stopping:
                    log.error("worker %s exited with %s; stopping the others", process.name, process.exitcode)
                    code = 1
                    forward(signal.SIGTERM, None)
        codes = [p.exitcode for p in workers]
        return code or next((1 for c in codes if c != 0), 0)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()


def app_from_env():
    """An app factory for ASGI servers other than `ijepa-serve` (uvicorn --factory, gunicorn workers):
    the configuration comes from the IJEPA_SERVE_CONFIG environment variable (ServeConfig.to_json())."""
    return create_app(ServeConfig.from_env())
