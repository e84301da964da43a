"""`EmbedConfig`: every option of embedding with one artifact, as one immutable object.

It travels unchanged from a command line (or a Python caller) through `Embedder.load`, the collection
writer, the Ray actors and the server, so no path can drop an option. `vector_options()` names the
options that change the vectors themselves (a resumed collection must match them); the others
(threads, streams, batch size, workers) only change speed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ijepa_deploy.contract.errors import UsageError

BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt")


@dataclass(frozen=True)
class EmbedConfig:
    precision: str = "fp32"
    backend: str = "auto"  # auto: a TensorRT plan for this GPU, else OpenVINO on x86 when installed, else ONNX Runtime
    providers: tuple[str, ...] | str | None = None  # ONNX Runtime: "cpu", "cuda", "tensorrt" or provider names
    threads: int | None = None  # intra-op threads (default: all cores)
    streams: int | None = None  # OpenVINO streams (default: OpenVINO's choice)
    batch_size: int | None = None  # images per batch (default: the artifact's optimal batch)
    resolution: tuple[int, int] | None = None  # embed at HxW instead of the native size (dynamic artifacts)
    verify: bool = True  # check every file's sha256 before it is opened
    workers: int = 4  # decode/resize threads
    device: int = 0  # CUDA device (TensorRT)
    graph_optimization_level: str = "all"  # ONNX Runtime
    openvino_cache: str | bool | None = None  # OpenVINO compile cache folder; False: compile every time
    cuda_graphs: bool | None = None  # TensorRT: capture CUDA graphs per bucket (None: $IJEPA_TENSORRT_CUDA_GRAPHS)
    warmup: bool = True  # run the backend's warm-up on load (TensorRT: every profile, graphs captured)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        for name in ("threads", "streams", "batch_size", "workers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise UsageError(f"{name.replace('_', ' ')} must be a positive integer, got {value!r}")
        if self.resolution is not None:
            h, w = self.resolution
            object.__setattr__(self, "resolution", (int(h), int(w)))
        if isinstance(self.providers, list):
            object.__setattr__(self, "providers", tuple(self.providers))

    def replace(self, **changes) -> "EmbedConfig":
        return dataclasses.replace(self, **changes)

    def vector_options(self) -> dict:
        """The options that change the vectors (besides the artifact and the backend's inference precision)."""
        return {"precision": self.precision, "resolution": list(self.resolution) if self.resolution else None}
