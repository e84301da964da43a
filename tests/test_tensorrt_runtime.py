"""The TensorRT backend's logic without a GPU: batch buckets and their choice, CUDA-graph decisions,
the context pool's close, compatibility rules (exact build, CPU architecture, hardware level), and
the backend itself over stand-ins for tensorrt and cuda-python (tests/fake_tensorrt.py)."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest

from ijepa_deploy.runtime import BackendError
from ijepa_deploy.runtime.backends.tensorrt_compat import check_engine_compat, cpu_arch, engine_compat_problem
from ijepa_deploy.runtime.backends.tensorrt_profiles import (CAPTURE, EXECUTE, REPLAY, Bucket, GraphState, PoolClosed,
                                                             ProfileRange, SlotPool, choose_profiles, parse_profiles)
from ijepa_deploy.contract.manifest import Engine

from . import fake_tensorrt as fake

# ------------------------------------------------------------------------- buckets


def test_parse_profiles():
    assert parse_profiles("1-4,8-32") == [Bucket(1, 4, 4), Bucket(8, 32, 32)]
    assert parse_profiles("1, 2-8@4, 16-32x2") == [Bucket(1, 1, 1), Bucket(2, 4, 8), Bucket(16, 32, 32),
                                                   Bucket(16, 32, 32)]
    for bad in ("", "4-1", "1-4@8", "0-2", "a-b", "1-4,", "1-2x0", "1-17x17"):
        with pytest.raises(ValueError):
            parse_profiles(bad)


RANGES = [ProfileRange(0, (1, 3, 28, 28), (4, 3, 112, 112)), ProfileRange(1, (8, 3, 28, 28), (32, 3, 112, 112)),
          ProfileRange(2, (8, 3, 28, 28), (32, 3, 112, 112))]


@pytest.mark.parametrize("batch,want", [
    (1, [(0, 1)]),                      # the small bucket
    (4, [(0, 4)]),
    (6, [(1, 8), (2, 8)]),              # in the gap: padded up to the next bucket's minimum
    (8, [(1, 8), (2, 8)]),              # two copies of a bucket: either free context serves it
    (40, []),                           # above every profile: the caller splits
])
def test_choose_profiles(batch, want):
    assert choose_profiles(RANGES, (batch, 3, 56, 56)) == want
    assert choose_profiles(RANGES, (batch, 3, 56, 224)) == []  # resolution outside every profile


def test_overlapping_buckets_prefer_the_tightest():
    ranges = [ProfileRange(0, (1, 3, 56, 56), (32, 3, 56, 56)), ProfileRange(1, (1, 3, 56, 56), (4, 3, 56, 56))]
    assert choose_profiles(ranges, (2, 3, 56, 56)) == [(1, 2), (0, 2)]


def test_graph_state_captures_after_warmup_and_recaptures_on_a_new_shape():
    g, a, b = GraphState(), ((4, 3, 56, 56), (1, 2)), ((2, 3, 56, 56), (1, 2))
    steps = []
    for key in (a, a, a, a, b, b, b, a, a):
        action = g.decide(key)
        stale = g.stale_graph(key)
        g.ran(key, action)
        steps.append((action, stale))
    assert [s[0] for s in steps] == [EXECUTE, CAPTURE, REPLAY, REPLAY, EXECUTE, CAPTURE, REPLAY, EXECUTE, CAPTURE]
    assert [s[1] for s in steps] == [False, False, False, False, True, False, False, True, False]
    moved = ((4, 3, 56, 56), (3, 4))  # buffers grew: new addresses, new key
    assert g.decide(moved) == EXECUTE
    failing = GraphState()
    for action in (EXECUTE, CAPTURE):
        assert failing.decide(a) == action
        failing.ran(a, action, ok=action != CAPTURE)
    assert failing.decide(a) == EXECUTE and failing.graph_key is None  # a failed capture is not retried


# ------------------------------------------------------------------------- the pool and close()


def test_close_waits_for_calls_in_flight_and_wakes_waiters():
    closed = []
    pool = SlotPool({0: ["a"], 1: ["b"]})
    profile, slot = pool.acquire([0])
    waiter_error = []

    def waiter():  # all candidate contexts busy: waits, then is refused when the pool closes
        try:
            pool.acquire([0])
        except PoolClosed as exc:
            waiter_error.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    closer = threading.Thread(target=lambda: pool.close(closed.append))
    closer.start()
    t.join(2)
    assert not t.is_alive() and waiter_error  # never blocked forever
    time.sleep(0.05)
    assert closer.is_alive() and closed == []  # the call in flight still holds its slot
    pool.release(profile, slot)
    closer.join(2)
    assert sorted(closed) == ["a", "b"] and not pool.close(closed.append)
    with pytest.raises(PoolClosed):
        pool.acquire([1])


# ------------------------------------------------------------------------- compatibility


ENGINE = {"file": "model_fp16.nvidia-a100.trt10.16.0.plan", "tensorrt_version": "10.16.0.72", "compute_capability": "8.0",
          "gpu_name": "NVIDIA A100-SXM4-80GB", "version_compatible": False, "hardware_compatibility": None,
          "cpu_arch": "x86_64"}
HERE = {"tensorrt_version": "10.16.0.72", "compute_capability": "8.0", "gpu_name": "NVIDIA A100", "cpu_arch": "x86_64"}


@pytest.mark.parametrize("change,reason", [
    ({}, None),
    ({"tensorrt_version": "10.16.0.11"}, "exact TensorRT build"),  # same three parts, another build
    ({"tensorrt_version": "10.16.1.11"}, "exact TensorRT build"),
    ({"tensorrt_version": "11.4.0.106"}, "exact TensorRT build"),
    ({"compute_capability": "9.0"}, "compute capability"),
    ({"cpu_arch": "aarch64", "compute_capability": "8.0"}, "does not load on aarch64"),
])
def test_engine_compatibility(change, reason):
    local = {**HERE, **change}
    problem = engine_compat_problem(ENGINE, local)
    if reason is None:
        assert problem is None
        return
    assert reason in problem and "built with TensorRT 10.16.0.72 for sm_80" in problem
    with pytest.raises(BackendError, match="rebuild with `ijepa-export build-engine --artifacts engines/x`"):
        check_engine_compat(ENGINE, local, "engines/x")


@pytest.mark.parametrize("built,here,ok", [
    ("10.16.0.72", "10.17.2.1", True), ("10.16.0.72", "11.4.0.106", True), ("8.6.1.6", "10.13.3.9", True),
    ("11.4.0.106", "10.16.0.72", False), ("10.16.0.72", "10.12.0.36", False), ("8.6.1.6", "11.4.0.106", False),
])
def test_version_compatible_plans(built, here, ok):
    entry = {**ENGINE, "tensorrt_version": built, "version_compatible": True}
    assert (engine_compat_problem(entry, {**HERE, "tensorrt_version": here}) is None) == ok


def test_hardware_compatibility_and_arch():
    amp = {**ENGINE, "hardware_compatibility": "ampere_plus"}
    assert engine_compat_problem(amp, {**HERE, "compute_capability": "9.0"}) is None
    assert "Ampere or newer" in engine_compat_problem(amp, {**HERE, "compute_capability": "7.5"})
    assert "does not load on aarch64" in engine_compat_problem(amp, {**HERE, "cpu_arch": "aarch64"})
    assert engine_compat_problem({**ENGINE, "cpu_arch": None}, {**HERE, "cpu_arch": "aarch64"}) is None  # older record
    assert cpu_arch("AMD64") == "x86_64" and cpu_arch("arm64") == "aarch64"


# ------------------------------------------------------------------------- the backend over stand-ins


def _record(profiles, **kw) -> Engine:
    kw = {"cpu_arch": cpu_arch(), **kw}
    return Engine(precision="fp16", file="model_fp16.x.trt10.3.0.plan", sha256="0" * 64, bytes=1,
                  tensorrt_version="10.3.0.26", gpu_name="NVIDIA Fake GPU", compute_capability="9.0",
                  profiles=[{"input": "pixel_values", "min": list(p[0]), "opt": list(p[1]), "max": list(p[2])}
                            for p in profiles], **kw)


BUCKETS = [((1, 3, 28, 28), (2, 3, 56, 56), (2, 3, 56, 56)), ((4, 3, 28, 28), (8, 3, 56, 56), (8, 3, 56, 56))]


@pytest.fixture
def backend(monkeypatch, tmp_path):
    trt, cudart = fake.install(monkeypatch)
    from ijepa_deploy.runtime.backends.tensorrt_backend import TensorRTBackend

    plan = tmp_path / "model_fp16.x.trt10.3.0.plan"
    plan.write_bytes(fake.plan_bytes(BUCKETS))

    def make(**kw):
        return TensorRTBackend(plan, _record(BUCKETS), **kw), cudart

    return make


def _pixels(n, size=56, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)


def test_one_context_per_profile_and_bucket_choice(backend):
    b, _ = backend()
    assert [c.profile for c in b.engine.contexts] == [0, 1]  # each context bound to its own profile
    assert {c.strategy for c in b.engine.contexts} == {"ON_PROFILE_CHANGE"}  # sized for its own profile
    for n in (1, 3, 8, 20):  # 3: padded up to 4 on profile 1; 20: split as 8 + 8 + 4
        x = _pixels(n, seed=n)
        got = b.run(x)
        want = fake.expected(x)
        assert got["embedding"].shape == (n, fake.HIDDEN)
        np.testing.assert_allclose(got["embedding"], want["embedding"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["last_hidden_state"], want["last_hidden_state"], rtol=1e-5, atol=1e-5)
    runs = [r for c in b.engine.contexts for r in c.runs]
    assert (0, (1, 3, 56, 56)) in runs and (1, (4, 3, 56, 56)) in runs and (1, (8, 3, 56, 56)) in runs
    assert all(shape[0] <= (2 if p == 0 else 8) for p, shape in runs)
    with pytest.raises(BackendError, match="outside every engine profile"):
        b.run(_pixels(1, size=112))
    b.close()
    with pytest.raises(BackendError, match="closed"):
        b.run(_pixels(1))


def test_cuda_graphs_per_context_and_shape(backend):
    b, cudart = backend(cuda_graphs=True)
    x8, x7 = _pixels(8), _pixels(7)
    for x in (x8, x8, x8):
        np.testing.assert_allclose(b.run(x)["embedding"], fake.expected(x)["embedding"], rtol=1e-5, atol=1e-5)
    assert cudart.calls.count("capture") == 1 and cudart.calls.count("launch") == 2  # warm-up, capture, replay
    b.run(x7)  # the context runs another shape: its graph is destroyed, then re-captured later
    assert cudart.calls[-1] == "destroy"
    for _ in range(2):
        np.testing.assert_allclose(b.run(x7)["embedding"], fake.expected(x7)["embedding"], rtol=1e-5, atol=1e-5)
    assert cudart.calls.count("capture") == 2
    assert b.warmup() == 4 and "CUDA graphs" in b.describe()  # every profile, twice (capture)
    b.close()
    assert cudart.calls.count("cudaStreamDestroy") == 2


def test_cuda_graphs_switch(backend, monkeypatch):
    assert not backend()[0].cuda_graphs
    monkeypatch.setenv("IJEPA_TENSORRT_CUDA_GRAPHS", "1")
    assert backend()[0].cuda_graphs and not backend(cuda_graphs=False)[0].cuda_graphs


def test_failed_capture_falls_back(backend):
    b, cudart = backend(cuda_graphs=True)
    cudart.fail_capture = True
    x = _pixels(2)
    for _ in range(4):
        np.testing.assert_allclose(b.run(x)["embedding"], fake.expected(x)["embedding"], rtol=1e-5, atol=1e-5)
    assert cudart.calls.count("capture") == 1 and "launch" not in cudart.calls
    b.close()


def test_close_during_a_run_waits_and_refuses_new_calls(backend, monkeypatch):
    b, _ = backend()
    from ijepa_deploy.runtime.backends import tensorrt_backend as module

    entered, release = threading.Event(), threading.Event()
    original = module.Slot.execute

    def slow(self, pixels, names):
        entered.set()
        release.wait(5)
        return original(self, pixels, names)

    monkeypatch.setattr(module.Slot, "execute", slow)
    results = []
    runner = threading.Thread(target=lambda: results.append(b.run(_pixels(1))))
    runner.start()
    entered.wait(2)
    closer = threading.Thread(target=b.close)
    closer.start()
    time.sleep(0.05)
    assert closer.is_alive()  # waits for the call in flight
    release.set()
    runner.join(2)
    closer.join(2)
    assert results and not closer.is_alive()
    with pytest.raises(BackendError, match="closed"):
        b.run(_pixels(1))


def test_stripped_plan_is_refitted_from_its_verified_onnx(monkeypatch, tiny_artifacts, tmp_path):
    trt, _ = fake.install(monkeypatch)
    from ijepa_deploy.runtime.backends.tensorrt_backend import TensorRTBackend
    from ijepa_deploy.contract.errors import IntegrityError

    folder = tmp_path / "art"
    shutil.copytree(tiny_artifacts, folder)
    plan = folder / "model_fp16.x.trt10.3.0.stripped.plan"
    plan.write_bytes(fake.plan_bytes(BUCKETS))
    b = TensorRTBackend(plan, _record(BUCKETS, stripped=True))
    assert trt.refits == [str(folder / "model_fp16.onnx")] and b.engine.refitted
    b.close()
    (folder / "model_fp16.onnx").write_bytes((folder / "model_fp16.onnx").read_bytes()[:-1] + b"\0")
    with pytest.raises(IntegrityError):
        TensorRTBackend(plan, _record(BUCKETS, stripped=True))


def test_backend_refuses_a_plan_of_another_cpu_arch(backend, monkeypatch, tmp_path):
    fake.install(monkeypatch)
    from ijepa_deploy.runtime.backends.tensorrt_backend import TensorRTBackend

    plan = tmp_path / "p.plan"
    plan.write_bytes(fake.plan_bytes(BUCKETS))
    other = "aarch64" if cpu_arch() != "aarch64" else "x86_64"
    with pytest.raises(BackendError, match=f"built on {other} does not load"):
        TensorRTBackend(plan, _record(BUCKETS, cpu_arch=other))
