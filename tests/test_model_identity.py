"""Two checkpoints of one architecture, weights in external data (as every real ViT-H has them): their
`.onnx` files are byte-identical, so only an identity over every file tells them apart. Collections,
`--output` sidecars and indexes built with one are refused with the other, naming both sides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ijepa_deploy.collection import build_index, embed_collection, query
from ijepa_deploy.contract.errors import CollectionError
from ijepa_deploy.contract.manifest import Manifest
from ijepa_deploy.exporter import onnx_graph

from .helpers import export_tiny, make_hf_checkpoint, run_module

pytest.importorskip("pyarrow", reason="collections need pyarrow (the [collections] extra)")


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> tuple[Path, Path]:
    """Model A and model B: same architecture and name, other weights, all weights in `.onnx.data`."""
    root = tmp_path_factory.mktemp("twins")
    patch = pytest.MonkeyPatch()
    patch.setattr(onnx_graph, "EXTERNAL_DATA_ABOVE", 0)  # as a 2.5 GB ViT-H has it
    try:
        a = export_tiny(make_hf_checkpoint(root / "a" / "ijepa_twin", seed=1), root / "engines_a")
        b = export_tiny(make_hf_checkpoint(root / "b" / "ijepa_twin", seed=2), root / "engines_b")
    finally:
        patch.undo()
    return a, b


def test_the_onnx_files_are_identical_and_the_identities_differ(twins):
    a, b = twins
    assert (a / "model_fp32.onnx").read_bytes() == (b / "model_fp32.onnx").read_bytes()
    assert (a / "model_fp32.onnx.data").read_bytes() != (b / "model_fp32.onnx.data").read_bytes()
    ida, idb = (Manifest.load(x).artifact("fp32").identity for x in (a, b))
    assert ida != idb and ida.startswith("sha256:")


def test_resume_with_the_other_model_is_refused(twins, photos, tmp_path):
    a, b = twins
    out = tmp_path / "emb"
    embed_collection([photos["eval"]], out, a, shard_size=5)
    (out / "shard-000003.json").unlink()  # an unfinished job
    with pytest.raises(CollectionError, match=r"identity is sha256:\w+… now, sha256:\w+… in the collection"):
        embed_collection([photos["eval"]], out, b, shard_size=5, resume=True)


def test_query_with_the_other_model_is_refused(twins, photos, tmp_path):
    pytest.importorskip("faiss", reason="FAISS is not installed (the [index] extra)")
    a, b = twins
    out = tmp_path / "emb"
    embed_collection([photos["eval"]], out, a, shard_size=5)
    build_index(out)
    query_image = sorted(photos["eval"].iterdir())[2]
    hits = query(out, a, [query_image], k=1)
    assert hits[0][1][0][0].endswith(query_image.name)
    with pytest.raises(CollectionError, match="is not the artifact .* was embedded with"):
        query(out, b, [query_image], k=1)


def test_the_output_sidecar_records_the_identity(twins, photos, tmp_path):
    a, b = twins
    for folder, name in ((a, "a"), (b, "b")):
        done = run_module("embed", "--artifacts", str(folder), str(photos["eval"]), "--output", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
    sidecars = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "b")]
    assert sidecars[0]["identity"] == Manifest.load(a).artifact("fp32").identity != sidecars[1]["identity"]
