"""ijepa-serve's served throughput and latency against the same runtime offline (`python -m
ijepa_deploy.cli.serve_bench`).

Starts `ijepa-serve` on a free loopback port, drives it with the `openai` client from N threads (one image per
request, base64 data URLs encoded beforehand, the client's default base64 answers) at each concurrency, and
measures offline `Embedder.embed` on the same images at the same batch size in the same process, interleaved
(offline, served levels, offline again: this machine is shared, so ratios within one run are what hold). The
load generator runs on the same machine as the server and takes its share of the cores.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from .machine import machine
from .models import BenchError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_url(data: bytes, kind: str = "png") -> str:
    """An image file's bytes as a `data:image/<kind>;base64,` URL (what clients of /v1/embeddings send)."""
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def file_data_url(path: Path) -> str:
    kind = path.suffix.lower().lstrip(".")
    return data_url(path.read_bytes(), {"jpg": "jpeg"}.get(kind, kind))


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {series (name and labels as written): value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def offline(embedder, files: list[Path], batch: int, rounds: int, warm: bool = False) -> dict:
    """Offline `Embedder.embed` images/s on the same files at `batch` (after a warm-up batch if `warm`)."""
    if warm:
        embedder.embed(files[:batch], batch_size=batch)
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        embedder.embed(files, batch_size=batch)
        rates.append(len(files) / (time.perf_counter() - start))
    return {"images_per_s": statistics.median(rates), "runs": rates}


def drive(url: str, model: str, inputs: list[str], concurrency: int, requests: int) -> dict:
    """`requests` single-image requests from `concurrency` threads with the OpenAI client; latency and rate."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
    for i in range(min(concurrency, 4)):  # connections and the first batches warm
        client.embeddings.create(model=model, input=[inputs[i % len(inputs)]])
    latencies, done, errors, lock = [], [], [], threading.Lock()
    counter = iter(range(requests))

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            start = time.perf_counter()
            try:
                answer = client.embeddings.create(model=model, input=[inputs[i % len(inputs)]])
                assert len(answer.data) == 1
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                continue
            with lock:
                latencies.append(time.perf_counter() - start)
                done.append(time.perf_counter())

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": requests, "ok": len(latencies), "errors": errors[:5],
            "images_per_s": len(latencies) / wall, "steady_images_per_s": steady_rate(sorted(done), concurrency),
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "wall_s": wall}


def steady_rate(done: list[float], concurrency: int) -> float | None:
    """Completions per second between the first and the last `concurrency` completions: without the ramp
    (every client's first request arriving at once) and the tail (fewer clients left than a batch)."""
    k = concurrency
    if len(done) <= 2 * k + 1:
        return None
    return (len(done) - 1 - 2 * k) / (done[-1 - k] - done[k])


def _batch_totals(url: str) -> tuple[float, float]:
    """(images batched, batches) so far, from the server's /metrics."""
    series = parse_metrics(urllib.request.urlopen(url + "/metrics", timeout=30).read().decode())
    return series.get("ijepa_serve_batch_size_sum", 0.0), series.get("ijepa_serve_batch_size_count", 0.0)


def start_server(artifacts: str, precision: str, backend: str, extra: list[str], log: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "ijepa_deploy.cli.serve", "--artifacts", artifacts, "--precision", precision,
           "--backend", backend, "--port", str(port), "--no-access-log", "--max-queue", "4096", *extra]
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"ijepa-serve exited with {proc.returncode}: see {log}")
        try:
            if urllib.request.urlopen(url + "/v1/health/ready", timeout=5).status == 200:
                return proc, url, cmd
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise BenchError(f"ijepa-serve not ready after 900 s: see {log}")


def run_levels(embedder, files: list[Path], batch: int, rounds: int, url: str, inputs: list[str],
               levels: list[int], per_level: int) -> tuple[list[dict], list[float]]:
    """Interleaved: offline, level 1, offline, level 2, ..., offline. Each level's ratio is against the mean
    of the offline passes just before and just after it (this machine's speed drifts between runs)."""
    model = json.loads(urllib.request.urlopen(url + "/v1/models").read())["data"][0]["id"]
    offline_rates, served = [offline(embedder, files, batch, rounds, warm=True)["images_per_s"]], []
    log.info("offline: %.2f images/s", offline_rates[-1])
    for c in levels:
        before = _batch_totals(url)
        level = drive(url, model, inputs, c, per_level * max(c, batch))
        after = _batch_totals(url)
        level["mean_batch"] = (after[0] - before[0]) / max(1.0, after[1] - before[1])
        offline_rates.append(offline(embedder, files, batch, rounds)["images_per_s"])
        level["offline_images_per_s"] = (offline_rates[-2] + offline_rates[-1]) / 2
        level["x_offline"] = level["images_per_s"] / level["offline_images_per_s"]
        if level["steady_images_per_s"]:
            level["steady_x_offline"] = level["steady_images_per_s"] / level["offline_images_per_s"]
        served.append(level)
        log.info("c=%d: %.2f images/s (x%.2f offline), p50 %.0f ms, p99 %.0f ms, mean batch %.2f; offline %.2f", c,
                 level["images_per_s"], level["x_offline"], level["p50_ms"], level["p99_ms"], level["mean_batch"],
                 offline_rates[-1])
    return served, offline_rates


def render(result: dict) -> str:
    m, r = result["machine"], result
    lines = [f"# ijepa-serve: served vs offline ({r['artifact']} {r['precision']}, {r['backend']})", "",
             f"Measured {r['created']} with `{r['command']}`.", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; {m['os']}. onnxruntime "
             f"{m.get('onnxruntime', '?')}, OpenVINO {m.get('openvino', '?')}. The load generator (openai client "
             "threads) shares these cores with the server.", "",
             f"Server batch {r['batch']} (the artifact's), `--max-wait-ms {r['max_wait_ms']}`; {r['images']} photos, "
             "one image per request as a base64 data URL; answers base64 (the openai client's default).", "",
             "| concurrency | served images/s (whole run) | offline images/s (adjacent passes) | x offline | "
             "served images/s (steady) | x offline | p50 ms | p99 ms | mean batch | errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for level in r["served"]:
        steady = level.get("steady_images_per_s")
        steady_cells = f"{steady:.2f} | {level['steady_x_offline']:.2f}" if steady else "- | -"
        lines.append(f"| {level['concurrency']} | {level['images_per_s']:.2f} | {level['offline_images_per_s']:.2f} | "
                     f"**{level['x_offline']:.2f}** | {steady_cells} | {level['p50_ms']:.0f} | "
                     f"{level['p99_ms']:.0f} | {level['mean_batch']:.2f} | {level['requests'] - level['ok']} |")
    top = r["served"][-1]
    lines += ["", f"Offline `Embedder.embed` at batch {r['batch']} on the same photos, passes in run order (before, "
              f"between and after the levels): {', '.join(f'{x:.2f}' for x in r['offline']['passes'])} images/s. "
              f"Whole run: ramp and tail included (every client's first request arrives at once; the last batches "
              f"are partial once fewer clients than a batch remain). Steady: between the first and the last "
              f"`concurrency` completions. Served / offline at concurrency {top['concurrency']}: "
              f"**{r['ratio_at_max']:.2f}**" + (f" (steady {r['steady_ratio_at_max']:.2f})"
                                                 if r.get("steady_ratio_at_max") else "") + ".", ""]
    return "\n".join(lines)


def bench_serving(artifacts: str, precision: str, backend: str, files: list[Path], levels: list[int], per_level: int,
                  rounds: int, max_wait_ms: float, log_path: Path, command: str) -> dict:
    """Start the server, run the interleaved levels, stop it (SIGTERM: a clean drain); the JSON result."""
    from ijepa_deploy.runtime import Embedder

    inputs = [file_data_url(f) for f in files]
    with Embedder.load(artifacts, precision, backend) as embedder:
        batch = embedder.batch_size()
        files_x = (files * (1 + 4 * batch // len(files)))[:max(4 * batch, len(files))]
        proc, url, cmd = start_server(artifacts, precision, backend, ["--max-wait-ms", str(max_wait_ms)], log_path)
        try:
            served, passes = run_levels(embedder, files_x, batch, rounds, url, inputs, levels, per_level)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    result = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "command": command, "server_command": " ".join(cmd[1:]),
              "artifact": os.path.basename(os.path.normpath(artifacts)), "precision": precision, "backend": backend,
              "batch": batch, "max_wait_ms": max_wait_ms, "images": len(files),
              "offline": {"images_per_s": statistics.median(passes), "passes": passes}, "served": served}
    result["ratio_at_max"] = served[-1]["x_offline"]
    result["steady_ratio_at_max"] = served[-1].get("steady_x_offline")
    return result
