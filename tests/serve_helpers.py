"""Helpers of the ijepa-serve tests: the server in its own process on a free loopback port, plain HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ijepa_deploy.bench.serve_load import data_url, free_port, parse_metrics  # noqa: F401 (re-exported for the tests)
from ijepa_deploy.runtime.similarity import cosine_rows


class Server:
    """`python -m ijepa_deploy.cli.serve ...` on a free loopback port, its log in a file."""

    def __init__(self, tmp: Path, artifacts: Path, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"serve-{self.port}.log"
        self._log = open(self.log_path, "w")
        cmd = [sys.executable, "-m", "ijepa_deploy.cli.serve", "--artifacts", str(artifacts), "--port", str(self.port),
               *args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
            try:
                if http_get(self.url + "/v1/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()

    def client(self, **kwargs):
        import openai

        kwargs.setdefault("api_key", "unused")
        return openai.OpenAI(base_url=self.url + "/v1", max_retries=0, timeout=60, **kwargs)

    def metrics(self) -> dict[str, float]:
        return parse_metrics(http_get(self.url + "/metrics")[2].decode())


@contextmanager
def running(tmp: Path, artifacts: Path, *args: str, env: dict | None = None, ready: bool = True):
    server = Server(tmp, artifacts, *args, env=env)
    try:
        if ready:
            server.wait_ready()
        yield server
    finally:
        server.stop()


def http_request(url: str, body: bytes | None = None, headers: dict | None = None, method: str | None = None):
    """(status, headers, body) of one request, errors included."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def http_get(url: str):
    return http_request(url)


def post_json(url: str, payload: dict, headers: dict | None = None):
    status, head, body = http_request(url + "/v1/embeddings", json.dumps(payload).encode(),
                                      {"Content-Type": "application/json", **(headers or {})})
    return status, head, json.loads(body)


def assert_same_vectors(got: np.ndarray, ref: np.ndarray, center: np.ndarray, floor: float = 0.9999) -> None:
    """Each served vector is its own image's reference vector: plain cosine, and cosine once `center` (the
    reference photos' mean embedding) is removed from both (random-init ViTs share a large
    image-independent component that plain cosine cannot see past), >= floor."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert cosine_rows(got, ref).min() >= floor
    centered = cosine_rows(got - center, ref - center)
    assert centered.min() >= floor, centered
