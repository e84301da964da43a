"""ijepa-serve over real loopback HTTP: the server runs in its own process (`python -m ijepa_deploy.cli.serve`), and
the tests talk to it with the `openai` client and urllib only (no ASGI test client, no mocks)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from .helpers import one_error_line, run_module
from .serve_helpers import (Server, assert_same_vectors, data_url, free_port, http_get, http_request, post_json,
                            running)

openai = pytest.importorskip("openai")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from ijepa_deploy.runtime import Embedder  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def images(photos) -> list[bytes]:
    files = sorted(Path(photos["eval"]).glob("*.png"))[:12]
    return [f.read_bytes() for f in files]


@pytest.fixture(scope="module")
def reference(tiny_artifacts, images) -> dict[str, np.ndarray]:
    """Embedder.embed on the same image bytes, per precision the tests serve."""
    out = {}
    for precision in ("fp32", "int8-cpu"):
        with Embedder.load(tiny_artifacts, precision) as embedder:
            out[precision] = embedder.embed(images)
    out["mean"] = out["fp32"].astype(np.float64).mean(axis=0)
    return out


@pytest.fixture(scope="module")
def photo_host(photos):
    """A plain HTTP server on loopback holding the photos, for the allowed-URL-host path."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(photos["eval"]))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_artifacts, photo_host):
    tmp = tmp_path_factory.mktemp("serve")
    with running(tmp, tiny_artifacts, "--max-wait-ms", "30", "--max-body-mb", "4", "--max-pixels", "2000000",
                 "--allow-url-host", photo_host) as s:
        yield s
    assert s.proc.returncode == 0, s.log()[-3000:]


# ---------------------------------------------------------------------- the answers


def test_the_comparison_catches_a_wrong_answer(reference):
    ref = reference["fp32"]
    with pytest.raises(AssertionError):
        assert_same_vectors(ref[[1, 0, *range(2, len(ref))]], ref, reference["mean"])  # two images' vectors swapped
    with pytest.raises(AssertionError):
        assert_same_vectors(reference["int8-cpu"], ref, reference["mean"])  # another precision: close, not equal


def test_openai_client_float_and_base64_equal_embedder(server, images, reference):
    client = server.client()
    inputs = [data_url(b) for b in images]
    inputs[1] = base64.b64encode(images[1]).decode()  # bare base64 of the file
    default = client.embeddings.create(model="tiny", input=inputs)  # the client asks for base64 by default
    floats = client.embeddings.create(model="tiny", input=inputs, encoding_format="float")
    for answer in (default, floats):
        assert answer.model == "tiny" and [d.index for d in answer.data] == list(range(len(images)))
        assert_same_vectors(np.array([d.embedding for d in answer.data]), reference["fp32"], reference["mean"])
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == len(images) * 16  # 56/14 squared patches
    raw = post_json(server.url, {"model": "tiny", "input": inputs[:2], "encoding_format": "base64"})[2]
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert_same_vectors(decoded[None], reference["fp32"][:1], reference["mean"])

    jpeg = io.BytesIO()
    from PIL import Image

    Image.open(io.BytesIO(images[0])).convert("RGB").save(jpeg, "JPEG", quality=95)
    with Embedder.load(server_artifacts(server)) as embedder:
        want = embedder.embed([jpeg.getvalue()])
    got = client.embeddings.create(model="tiny", input=[data_url(jpeg.getvalue(), "jpeg")]).data[0].embedding
    assert_same_vectors(np.array([got]), want, reference["mean"])


def server_artifacts(server) -> str:
    return server.proc.args[server.proc.args.index("--artifacts") + 1]


def test_models_health_and_metrics_routes(server):
    status, _, body = http_get(server.url + "/v1/models")
    models = json.loads(body)
    assert status == 200 and models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["tiny"] and models["data"][0]["dim"] == 64
    assert [m.id for m in server.client().models.list()] == ["tiny"]
    assert http_get(server.url + "/v1/health/live")[0] == 200
    assert http_get(server.url + "/v1/health/ready")[0] == 200
    status, headers, body = http_get(server.url + "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in ("ijepa_serve_requests_total", "ijepa_serve_request_duration_seconds_bucket", "ijepa_serve_queue_depth",
                 "ijepa_serve_batch_size_bucket", "ijepa_serve_inference_seconds_bucket", "ijepa_serve_images_total",
                 "ijepa_serve_images_per_second", "ijepa_serve_model_info", "ijepa_serve_model_load_seconds",
                 "ijepa_serve_queue_wait_seconds_bucket", "ijepa_serve_decode_seconds_bucket"):
        assert name in text, name
    assert re.search(r'ijepa_serve_model_info\{.*precision="fp32".*\} 1', text)
    assert re.search(r'ijepa_serve_requests_total\{method="GET",route="/v1/models",status="200"\} [1-9]', text)
    access = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(a["path"] == "/v1/models" and a["status"] == 200 and a["request_id"] for a in access)


def test_concurrent_requests_are_batched_and_bad_neighbours_fail_alone(server, images, reference):
    before = server.metrics()
    client = server.client()

    def good(i):
        answer = client.embeddings.create(model="tiny", input=[data_url(images[i % len(images)])])
        return i, np.array(answer.data[0].embedding)

    def bad(i):
        return post_json(server.url, {"model": "tiny", "input": [data_url(images[0]), data_url(b"not an image")]})

    with ThreadPoolExecutor(40) as pool:
        bad_futures = [pool.submit(bad, i) for i in range(8)]
        results = list(pool.map(good, range(32)))
    for future in bad_futures:
        status, _, body = future.result()
        assert status == 400 and body["error"]["param"] == "input[1]"
    got = np.stack([v for _, v in results])
    assert_same_vectors(got, reference["fp32"][[i % len(images) for i, _ in results]], reference["mean"])
    after = server.metrics()
    batches = after["ijepa_serve_batch_size_count"] - before["ijepa_serve_batch_size_count"]
    batched = after["ijepa_serve_batch_size_sum"] - before["ijepa_serve_batch_size_sum"]
    assert batched == 32  # the bad requests never reached a batch
    assert batched / batches > 1, (batched, batches)


def test_every_error_is_openai_shaped(server, images):
    good = data_url(images[0])
    cases = [
        ({"model": "tiny", "input": [good, "!!not base64!!"]}, 400, "invalid_base64", "input[1]"),
        ({"model": "tiny", "input": [good, good, base64.b64encode(b"plain text").decode()]}, 400, "invalid_image",
         "input[2]"),
        ({"model": "tiny", "input": [data_url(png_of(2000, 1001))]}, 400, "too_many_pixels", "input[0]"),
        ({"model": "tiny", "input": []}, 400, "empty_input", "input"),
        ({"model": "tiny", "input": [""]}, 400, "empty_input", "input[0]"),
        ({"model": "tiny", "input": ["data:text/plain;base64,aGVsbG8="]}, 400, "invalid_input", "input[0]"),
        ({"model": "tiny", "input": ["http://example.com/cat.png"]}, 400, "url_not_allowed", "input[0]"),
        ({"model": "tiny", "input": [good], "encoding_format": "int8"}, 400, "invalid_encoding_format",
         "encoding_format"),
        ({"model": "tiny", "input": ["AAAA"] * 257}, 400, "too_many_inputs", "input"),  # over --max-queue 256
        ({"model": "tiny", "input": [good, 7]}, 400, "invalid_input", "input[1]"),
        ({"input": [good]}, 400, "invalid_model", "model"),
        ({"model": "vith14_1k", "input": [good]}, 404, "model_not_found", "model"),
    ]
    for payload, status, code, param in cases:
        got, _, body = post_json(server.url, payload)
        assert got == status, (payload.get("input", [""])[:1], got, body)
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["code"], error["param"]) == (code, param), body
        if param.startswith("input["):
            assert param in error["message"]
    with pytest.raises(openai.NotFoundError):
        server.client().embeddings.create(model="other", input=[good])
    with pytest.raises(openai.BadRequestError):
        server.client().embeddings.create(model="tiny", input=["%%%"])
    assert json.loads(http_get(server.url + "/v1/nothing")[2])["error"]["code"] == "not_found"


def png_of(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (width, height), 128).save(out, "PNG")
    return out.getvalue()


def test_body_limit_413_declared_and_streamed(server):
    big = json.dumps({"model": "tiny", "input": ["A" * 4_500_000]}).encode()
    status, _, body = http_request(server.url + "/v1/embeddings", big, {"Content-Type": "application/json"})
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)  # chunked: no Content-Length
    conn.request("POST", "/v1/embeddings", body=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"]["code"] == "request_too_large"
    conn.close()


def test_remote_urls_only_from_allowed_hosts(server, photo_host, images, reference, photos):
    name = sorted(Path(photos["eval"]).glob("*.png"))[2].name
    answer = server.client().embeddings.create(model="tiny", input=[f"http://{photo_host}/{name}"])
    assert_same_vectors(np.array([answer.data[0].embedding]), reference["fp32"][2:3], reference["mean"])
    status, _, body = post_json(server.url, {"model": "tiny", "input": [f"http://{photo_host}/missing.png"]})
    assert status == 400 and body["error"]["code"] == "url_fetch_failed"


# ---------------------------------------------------------------------- key, overload, drift watch


def test_api_key_overload_429_and_shadow(tmp_path, tiny_artifacts, images, reference):
    env = {"IJEPA_TEST_KEY": "s3cret-key"}
    with running(tmp_path, tiny_artifacts, "--precision", "int8-cpu", "--api-key-env", "IJEPA_TEST_KEY",
                 "--max-queue", "4", "--max-wait-ms", "100", "--shadow", "fp32", "--shadow-rate", "1",
                 env=env) as s:
        good = [data_url(images[0])]
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-key"}):
            status, _, body = post_json(s.url, {"model": "tiny", "input": good}, headers)
            assert status == 401 and body["error"]["code"] == "invalid_api_key", (headers, body)
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="nope").embeddings.create(model="tiny", input=good)
        assert http_get(s.url + "/v1/health/ready")[0] == 200  # probes need no key
        client = s.client(api_key="s3cret-key")

        def one(i):
            n = 1 + i % 3
            payload = {"model": "tiny", "input": [data_url(images[j]) for j in range(n)]}
            status, headers, body = post_json(s.url, payload, {"Authorization": "Bearer s3cret-key"})
            return n, status, headers, body

        with ThreadPoolExecutor(24) as pool:
            outcomes = list(pool.map(one, range(48)))
        statuses = [status for _, status, _, _ in outcomes]
        assert set(statuses) <= {200, 429} and statuses.count(429) > 0 and statuses.count(200) > 0, statuses
        for n, status, headers, body in outcomes:
            if status == 429:
                assert int(headers["Retry-After"]) >= 1 and body["error"]["code"] == "queue_full"
            else:
                got = np.array([d["embedding"] for d in body["data"]])  # float: the API's default
                assert_same_vectors(got, reference["int8-cpu"][:n], reference["mean"])
        with pytest.raises(openai.RateLimitError):  # the client sees a 429 as a rate limit
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: client.embeddings.create(model="tiny", input=[data_url(b) for b in images[:4]]),
                              range(8)))
        assert http_get(s.url + "/v1/health/ready")[0] == 200  # still healthy and correct after the overload
        answer = client.embeddings.create(model="tiny", input=[data_url(b) for b in images[:3]])
        assert_same_vectors(np.array([d.embedding for d in answer.data]), reference["int8-cpu"][:3], reference["mean"])
        served = s.metrics()["ijepa_serve_images_total"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (s.metrics()["ijepa_serve_shadow_images_total"]
                                               + s.metrics()["ijepa_serve_shadow_dropped_total"]) < served:
            time.sleep(0.2)
        m = s.metrics()
        assert m['ijepa_serve_rejected_total{reason="queue_full"}'] > 0
        shadowed = m["ijepa_serve_shadow_images_total"]
        assert shadowed + m["ijepa_serve_shadow_dropped_total"] == served and shadowed >= 3  # how many got in varies
        assert m["ijepa_serve_shadow_centered_cosine_count"] == shadowed  # once the first centering mean formed
        assert m['ijepa_serve_shadow_centered_cosine_bucket{le="0.98"}'] == 0  # the int8-cpu gate's floor holds
        assert m['ijepa_serve_shadow_cosine_bucket{le="0.999"}'] == 0
    assert s.proc.returncode == 0


# ---------------------------------------------------------------------- lifecycle


def test_loading_503_then_sigterm_drains_every_admitted_request(tmp_path, tiny_artifacts, images, reference):
    s = Server(tmp_path, tiny_artifacts, "--max-wait-ms", "1500", "--warmup-batches", "3000")
    try:
        seen_loading = False
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                status, _, body = http_get(s.url + "/v1/health/ready")
            except OSError:
                time.sleep(0.05)
                continue
            if status == 200:
                break
            assert status == 503 and json.loads(body)["error"]["code"] == "model_loading"
            assert http_get(s.url + "/v1/health/live")[0] == 200
            status, headers, body = post_json(s.url, {"model": "tiny", "input": [data_url(images[0])]})
            if status == 503:  # (the load may complete between the two requests)
                assert body["error"]["code"] == "model_loading" and int(headers["Retry-After"]) >= 1
                seen_loading = True
        assert seen_loading, s.log()[-2000:]
        s.wait_ready()

        with ThreadPoolExecutor(4) as pool:
            # three single-image requests wait in the queue for a fourth image or 1.5 s
            admitted = [pool.submit(post_json, s.url, {"model": "tiny", "input": [data_url(images[i])]})
                        for i in range(3)]
            deadline = time.monotonic() + 10
            while s.metrics()["ijepa_serve_queue_depth"] < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert s.metrics()["ijepa_serve_queue_depth"] == 3
            s.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            status, headers, body = post_json(s.url, {"model": "tiny", "input": [data_url(images[0])]})
            assert status == 503 and body["error"]["code"] == "draining" and "Retry-After" in headers
            assert http_get(s.url + "/v1/health/ready")[0] == 503
            assert http_get(s.url + "/v1/health/live")[0] == 200
            for i, future in enumerate(admitted):
                status, _, body = future.result(timeout=30)
                assert status == 200, body
                got = np.array([body["data"][0]["embedding"]])
                assert_same_vectors(got, reference["fp32"][i:i + 1], reference["mean"])
        assert s.proc.wait(30) == 0, s.log()[-3000:]
        assert "Traceback" not in s.log()
    finally:
        s.stop()


def test_sigterm_under_load_loses_no_admitted_request(tmp_path, tiny_artifacts, images, reference):
    with running(tmp_path, tiny_artifacts, "--max-wait-ms", "20") as s:
        stop_at = time.monotonic() + 60
        outcomes: list[tuple] = []

        def hammer(k):
            while time.monotonic() < stop_at:
                i = k % len(images)
                try:
                    status, _, body = post_json(s.url, {"model": "tiny", "input": [data_url(images[i])] * 2})
                except urllib.error.URLError as exc:  # the listener is closed once the drain is over
                    assert isinstance(exc.reason, ConnectionRefusedError), exc
                    outcomes.append(("refused", i, None))
                    return
                except ConnectionResetError:  # a connection the closing listener never accepted
                    outcomes.append(("reset", i, None))
                    return
                outcomes.append((status, i, body))
                if status == 503:
                    return

        threads = [threading.Thread(target=hammer, args=(k,)) for k in range(12)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        s.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert s.proc.wait(30) == 0, s.log()[-3000:]
    ok = [(i, body) for status, i, body in outcomes if status == 200]
    statuses = [status for status, _, _ in outcomes]
    assert len(ok) > 10 and set(statuses) <= {200, 503, "refused", "reset"}, statuses
    for i, body in ok:
        got = np.array([d["embedding"] for d in body["data"]])
        assert_same_vectors(got, reference["fp32"][[i, i]], reference["mean"])
    logged = [json.loads(line) for line in s.log().splitlines() if line.startswith("{")]
    logged = [a["status"] for a in logged if a["path"] == "/v1/embeddings"]
    # every request the server took in was answered, and every answer reached its client: 200s, then 503s
    assert sorted(logged) == sorted(x for x in statuses if isinstance(x, int))


def test_workers_share_only_the_artifact_folder(tmp_path, tiny_artifacts, images, reference):
    with running(tmp_path, tiny_artifacts, "--workers", "2") as s:
        children = subprocess.run(["pgrep", "-P", str(s.proc.pid), "-f", "spawn_main"], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) == 2
        deadline = time.monotonic() + 60
        while s.log().count("ijepa_deploy.serve.app: ready:") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the second worker may still be loading
        assert s.log().count("ijepa_deploy.serve.app: ready:") == 2, s.log()[-3000:]
        client = s.client()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: client.embeddings.create(model="tiny", input=[data_url(images[i])]),
                                    range(8)))
        assert_same_vectors(np.array([a.data[0].embedding for a in answers]), reference["fp32"][:8], reference["mean"])
        workers = {line.split("Started server process [")[1].split("]")[0] for line in s.log().splitlines()
                   if "Started server process [" in line}
        assert workers == set(children)
    assert s.proc.returncode == 0, s.log()[-3000:]
    assert all(not Path(f"/proc/{pid}").exists() for pid in children)


def test_cli_errors_are_one_line(tmp_path, tiny_artifacts):
    out = run_module("ijepa_deploy.cli.serve", "--artifacts", str(tmp_path / "missing"), "--port", str(free_port()))
    assert "missing" in one_error_line(out)
    out = run_module("ijepa_deploy.cli.serve", "--artifacts", str(tiny_artifacts), "--shadow-rate", "0.5")
    assert "--shadow" in one_error_line(out)
    out = run_module("ijepa_deploy.cli.serve", "--artifacts", str(tiny_artifacts), "--api-key-env", "IJEPA_UNSET_VAR_X")
    assert "IJEPA_UNSET_VAR_X" in one_error_line(out)
    out = run_module("ijepa_deploy.cli.serve", "--artifacts", str(tiny_artifacts), "--precision", "bf16")
    assert "bf16" in one_error_line(out)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = run_module("ijepa_deploy.cli.serve", "--artifacts", str(tiny_artifacts), "--port",
                         str(busy.getsockname()[1]))
        assert "cannot listen on 127.0.0.1" in one_error_line(out)


def test_batcher_isolates_a_failing_image_from_its_batch_neighbours():
    """The batcher itself, with a backend function that fails on one image (a marker pixel value) and one that
    returns NaN for another: only the requests holding them fail; their batch neighbours get their rows."""
    import asyncio

    from ijepa_deploy.serve.batcher import DynamicBatcher, NonFiniteOutput

    def infer(pixels):
        if (pixels == 13).any(axis=(1, 2, 3)).any():
            raise RuntimeError("backend failure on image 13")
        out = pixels.reshape(len(pixels), -1)[:, :4].astype(np.float32)
        out[(pixels == 7).all(axis=(1, 2, 3))] = np.nan
        return out

    async def main():
        batcher = DynamicBatcher(lambda arrays: np.stack(arrays), infer, max_batch=8, max_wait_s=0.05, max_queue=64)
        batcher.start()

        async def request(values):
            with batcher.admit(len(values)) as ticket:
                return await batcher.embed([np.full((2, 2, 3), v, np.uint8) for v in values], ticket)

        results = await asyncio.gather(request([1, 2]), request([13]), request([3]), request([7, 4]),
                                       return_exceptions=True)
        await batcher.stop()
        return results, batcher.depth

    (a, failed, b, nan), depth = asyncio.run(main())
    assert a[:, 0].tolist() == [1, 2] and b[:, 0].tolist() == [3]
    assert isinstance(failed, RuntimeError) and isinstance(nan, NonFiniteOutput)
    assert depth == 0


def test_serve_bench_reports_every_level(tmp_path, tiny_artifacts, photos):
    out = run_module("ijepa_deploy.cli.serve_bench", "--artifacts", str(tiny_artifacts), "--images",
                     str(photos["eval"]), "--concurrency", "1,3", "--requests", "1", "--out", str(tmp_path / "b"))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "b.json").read_text())
    assert [level["concurrency"] for level in result["served"]] == [1, 3] and len(result["offline"]["passes"]) == 3
    assert all(lv["ok"] == lv["requests"] and lv["p99_ms"] >= lv["p50_ms"] > 0 for lv in result["served"])
    assert "| 3 |" in (tmp_path / "b.md").read_text()
