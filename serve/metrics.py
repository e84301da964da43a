"""Prometheus metrics of one server process, in its own CollectorRegistry (never the global one)."""

from __future__ import annotations

import collections
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COSINE_BUCKETS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0)
PREFIX = "ijepa_serve_"


class ServeMetrics:
    """Every metric the server exports; `render()` is the `/metrics` body."""

    def __init__(self, max_batch: int = 64):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(f"{PREFIX}requests", "HTTP requests by route and status", ["route", "method", "status"],
                                registry=r)
        self.request_seconds = Histogram(f"{PREFIX}request_duration_seconds", "HTTP request latency by route and "
                                         "status", ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge(f"{PREFIX}queue_depth", "images admitted and not yet running (decoding or "
                                 "waiting for a batch)", registry=r)
        self.queue_seconds = Histogram(f"{PREFIX}queue_wait_seconds", "time an image waited for its batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.decode_seconds = Histogram(f"{PREFIX}decode_seconds", "base64 + image decode + resize of one request",
                                        buckets=LATENCY_BUCKETS, registry=r)
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, max_batch})
        self.batch_size = Histogram(f"{PREFIX}batch_size", "images per backend batch", buckets=sizes, registry=r)
        self.inference_seconds = Histogram(f"{PREFIX}inference_seconds", "backend run time per batch",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter(f"{PREFIX}images", "images embedded", registry=r)
        self.images_per_second = Gauge(f"{PREFIX}images_per_second", "images embedded per second over the last "
                                       "10 s", registry=r)
        self.rejected = Counter(f"{PREFIX}rejected", "requests refused before running, by reason", ["reason"],
                                registry=r)
        self.model = Info(f"{PREFIX}model", "the served artifact", registry=r)
        self.load_seconds = Gauge(f"{PREFIX}model_load_seconds", "time to load, verify and warm up the model",
                                  registry=r)
        self.ready = Gauge(f"{PREFIX}ready", "1 when the model is loaded and warm and the server is not draining",
                           registry=r)
        self.shadow_centered = Histogram(f"{PREFIX}shadow_centered_cosine", "centered cosine of served vs shadow "
                                         "(fp32) embeddings of sampled images", buckets=COSINE_BUCKETS, registry=r)
        self.shadow_cosine = Histogram(f"{PREFIX}shadow_cosine", "plain cosine of served vs shadow embeddings",
                                       buckets=COSINE_BUCKETS, registry=r)
        self.shadow_images = Counter(f"{PREFIX}shadow_images", "served images re-embedded by the shadow", registry=r)
        self.shadow_dropped = Counter(f"{PREFIX}shadow_dropped", "sampled images dropped: the shadow was busy",
                                      registry=r)
        self._window: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self.images_per_second.set_function(self._rate)

    def batch_done(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference_seconds.observe(seconds)
        self.images.inc(size)
        now = time.monotonic()
        with self._lock:
            self._window.append((now, size))

    def _rate(self, span: float = 10.0) -> float:
        now = time.monotonic()
        with self._lock:
            while self._window and self._window[0][0] < now - span:
                self._window.popleft()
            return sum(n for _, n in self._window) / span

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
