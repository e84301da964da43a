"""`ijepa-serve --ray local`: the same app as a Ray Serve deployment, same routes and answers (one test: a
local Ray cluster is heavy)."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest

from .serve_helpers import Server, assert_same_vectors, data_url, http_get, post_json

pytest.importorskip("ray.serve")
openai = pytest.importorskip("openai")

from ijepa_deploy.runtime import Embedder  # noqa: E402


@pytest.mark.timeout(400)
def test_ray_serve_deployment_returns_the_same_vectors(tmp_path, tiny_artifacts, photos):
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    images = [f.read_bytes() for f in sorted(Path(photos["eval"]).glob("*.png"))[:8]]
    with Embedder.load(tiny_artifacts) as embedder:
        ref = embedder.embed(images)
    center = ref.astype(np.float64).mean(axis=0)
    s = Server(tmp_path, tiny_artifacts, "--ray", "local", "--replicas", "1", "--ray-num-cpus", "0.5",
               "--max-wait-ms", "50", env={"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"})
    try:
        s.wait_ready(timeout=240)
        client = s.client()
        assert [m.id for m in client.models.list()] == ["tiny"]
        inputs = [data_url(b) for b in images]
        for fmt in ({}, {"encoding_format": "float"}):
            answer = client.embeddings.create(model="tiny", input=inputs, **fmt)
            assert_same_vectors(np.array([d.embedding for d in answer.data]), ref, center)
        with ThreadPoolExecutor(16) as pool:  # across requests through Ray Serve's own @serve.batch
            answers = list(pool.map(lambda i: client.embeddings.create(model="tiny", input=[inputs[i % 8]]), range(32)))
        assert_same_vectors(np.array([a.data[0].embedding for a in answers]), ref[[i % 8 for i in range(32)]], center)
        raw = post_json(s.url, {"model": "tiny", "input": inputs[:1], "encoding_format": "base64"})[2]
        assert_same_vectors(np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), "<f4")[None], ref[:1], center)
        status, _, body = post_json(s.url, {"model": "tiny", "input": [inputs[0], "%%%"]})
        assert status == 400 and body["error"]["param"] == "input[1]"
        status, _, body = post_json(s.url, {"model": "other", "input": inputs[:1]})
        assert status == 404 and body["error"]["code"] == "model_not_found"
        status, _, text = http_get(s.url + "/metrics")
        assert status == 200 and b"ijepa_serve_batch_size_bucket" in text
        start = time.monotonic()
        assert s.stop(timeout=120) == 0, s.log()[-3000:]
        print(f"Ray Serve shut down in {time.monotonic() - start:.1f} s")
        assert "Traceback" not in s.log(), s.log()[-3000:]
    finally:
        s.stop()
