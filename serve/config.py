"""Every option of the server, in one frozen dataclass (the CLI, the workers and Ray replicas share it)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields

from ijepa_deploy.runtime import EmbedConfig, UsageError

ENV_CONFIG = "IJEPA_SERVE_CONFIG"  # the configuration of `app_from_env` (an ASGI server other than ijepa-serve)


@dataclass(frozen=True)
class ServeConfig:
    """Options of `ijepa-serve`; defaults are the CLI's."""

    artifacts: str
    precision: str = "fp32"
    backend: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str | None = None  # default: the manifest's name
    max_batch: int | None = None  # default: the artifact's optimal batch (the Embedder's)
    max_wait_ms: float = 5.0
    max_queue: int = 256  # images admitted (decoding or waiting) before 429
    pipeline: int = 2  # batches in flight: one runs, the next is prepared
    max_body_mb: float = 16.0
    max_pixels: int | None = None  # default: the manifest's limit
    api_key_env: str | None = None
    allow_url_hosts: tuple[str, ...] = ()
    url_timeout_s: float = 10.0
    workers: int = 1
    threads: int | None = None
    decode_workers: int | None = None  # default: min(4, CPUs)
    warmup_batches: int = 2
    drain_timeout_s: float = 30.0
    shadow: str | None = None
    shadow_rate: float = 0.0
    verify: bool = True
    access_log: bool = True
    ray_address: str | None = None
    replicas: int = 1
    ray_max_replicas: int | None = None  # autoscaling between --replicas and this
    ray_num_cpus: float = 1.0

    def __post_init__(self):
        checks = [
            (self.max_wait_ms >= 0, "--max-wait-ms must be >= 0"),
            (self.max_queue >= 1, "--max-queue must be >= 1"),
            (self.pipeline >= 1, "--pipeline must be >= 1"),
            (self.max_body_mb > 0, "--max-body-mb must be > 0"),
            (self.max_batch is None or self.max_batch >= 1, "--max-batch must be >= 1"),
            (self.workers >= 1, "--workers must be >= 1"),
            (0.0 <= self.shadow_rate <= 1.0, "--shadow-rate must be between 0 and 1"),
            (self.shadow_rate == 0 or self.shadow is not None, "--shadow-rate needs --shadow PRECISION"),
            (self.replicas >= 1, "--replicas must be >= 1"),
            (self.ray_max_replicas is None or self.ray_max_replicas >= self.replicas,
             "--ray-max-replicas must be >= --replicas"),
            (not (self.workers > 1 and self.ray_address), "--workers and --ray are exclusive (use --replicas)"),
            (1 <= self.port <= 65535 or self.port == 0, "--port must be 0..65535"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        object.__setattr__(self, "allow_url_hosts", tuple(h.lower() for h in self.allow_url_hosts))

    def embed_config(self, precision: str | None = None, threads: int | None = None) -> EmbedConfig:
        """The runtime's options for the served precision (or another: the drift watch's)."""
        return EmbedConfig(precision=precision or self.precision, backend=self.backend, verify=self.verify,
                           threads=threads or self.threads, batch_size=self.max_batch)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def api_key(self) -> str | None:
        """The key clients must send, read from the environment variable named by `api_key_env`."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise UsageError(f"--api-key-env {self.api_key_env}: that environment variable is not set or empty")
        return key

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        data = {k: tuple(v) if k == "allow_url_hosts" else v for k, v in data.items() if k in known}
        return cls(**data)

    @classmethod
    def from_env(cls) -> "ServeConfig":
        text = os.environ.get(ENV_CONFIG)
        if not text:
            raise UsageError(f"{ENV_CONFIG} is not set: start workers through ijepa-serve")
        return cls.from_json(text)
