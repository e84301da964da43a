"""Property-based fuzzing (hypothesis): manifests and image bytes from hostile or broken sources.

For every generated case the only acceptable outcomes are a result or one of our user errors:
no other exception, no hang, nothing written anywhere."""

from __future__ import annotations

import io
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ijepa_deploy.runtime import Manifest, Preprocessor, UserError
from ijepa_deploy.runtime.preprocessing import parse_size

from .helpers import skimage_data_dir

MANIFEST_CASES = int(os.environ.get("IJEPA_FUZZ_MANIFESTS", "1500"))
IMAGE_CASES = int(os.environ.get("IJEPA_FUZZ_IMAGES", "1500"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12)


def _paths(value, prefix=()):
    """Every path into a JSON document."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@pytest.fixture(scope="module")
def manifest_data(tiny_artifacts) -> dict:
    return json.loads((tiny_artifacts / "manifest.json").read_text())


@st.composite
def mutated_manifests(draw, base: dict):
    data = json.loads(json.dumps(base))
    paths = [p for p in _paths(data) if p]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        parent = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "delete", "insert"]))
            if action == "replace":
                parent[path[-1]] = draw(json_values)
            elif action == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=10))] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    return data


def test_fuzz_manifests(manifest_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzzed")
    outside = set(folder.parent.iterdir())
    seen = {"loaded": 0, "refused": 0}

    @settings(max_examples=MANIFEST_CASES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutated_manifests(manifest_data))
    def check(data):
        (folder / "manifest.json").write_text(json.dumps(data))
        try:
            manifest = Manifest.load(folder)
        except UserError:
            seen["refused"] += 1
            return
        seen["loaded"] += 1
        for precision in manifest.artifacts:
            try:
                manifest.verify(precision)  # the files are not there: a clear error, never an escape
            except UserError:
                pass

    check()
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json"]
    assert set(folder.parent.iterdir()) == outside
    assert seen["refused"] > 0 and seen["loaded"] + seen["refused"] >= min(MANIFEST_CASES, 500)
    print(f"fuzzed manifests: {seen}")


def _seed_images() -> list[bytes]:
    out = []
    for name, fmt in (("coffee.png", "PNG"), ("rocket.jpg", "JPEG"), ("camera.png", "GIF"), ("logo.png", "WEBP"),
                      ("chelsea.png", "TIFF"), ("moon.png", "BMP")):
        buffer = io.BytesIO()
        Image.open(skimage_data_dir() / name).resize((40, 30)).save(buffer, format=fmt)
        out.append(buffer.getvalue())
    return out


SEEDS = _seed_images()


@st.composite
def mutated_images(draw):
    if draw(st.booleans()) and draw(st.booleans()):
        return draw(st.binary(max_size=2000))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "header"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[i:]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:  # forge the first bytes (sizes live in the header)
            data[min(i, 40)] = draw(st.integers(0, 255))
    return bytes(data)


def test_fuzz_image_bytes(tiny_artifacts, tmp_path):
    pre = Preprocessor(Manifest.load(tiny_artifacts).preprocessing)
    seen = {"decoded": 0, "refused": 0}

    @settings(max_examples=IMAGE_CASES, deadline=5000, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutated_images())
    def check(data):
        try:
            array, _ = pre.load(data)
        except UserError:
            seen["refused"] += 1
            return
        assert array.shape == (56, 56, 3)
        seen["decoded"] += 1

    check()
    assert seen["refused"] > 0 and seen["decoded"] > 0
    assert list(tmp_path.iterdir()) == []
    print(f"fuzzed images: {seen}")


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.text(max_size=20))
def test_fuzz_sizes(text):
    try:
        size = parse_size(text, allow_dynamic=True)
    except UserError:
        return
    assert size is None or (len(size) == 2 and all(1 <= x <= 16384 for x in size))
