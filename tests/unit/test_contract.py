"""The contract, without an export: the records codec, manifest parsing and its refusals, the identity,
file naming and precision facts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ijepa_deploy.contract.architecture import Architecture
from ijepa_deploy.contract.errors import ManifestError
from ijepa_deploy.contract.identity import artifact_identity, with_identity
from ijepa_deploy.contract.manifest import (Artifact, BatchRange, CheckpointRecord, FileRecord, IOSpec, Manifest,
                                            Preprocessing, ResolutionRange, TensorSpec, Validation)
from ijepa_deploy.contract.naming import (data_name, gpu_slug, onnx_name, parse_plan_name, plan_name, shard_names,
                                          timing_cache_name)
from ijepa_deploy.contract.precisions import PRECISIONS, default_plan_precisions, with_fp32
from ijepa_deploy.contract.records import dump_record, load_record

ARCH = Architecture(hidden_size=64, num_layers=2, num_heads=4, mlp_size=128, image_size=56, patch_size=14)


def manifest(**artifacts) -> Manifest:
    base = Manifest(name="tiny", architecture=ARCH, checkpoint=CheckpointRecord("random-init", None, seed=0),
                    preprocessing=Preprocessing(56, 56),
                    io=IOSpec((TensorSpec("pixel_values", "float32", ("batch", 3, "height", "width")),),
                              (TensorSpec("last_hidden_state", "float32", ("batch", "tokens", 64)),
                               TensorSpec("embedding", "float32", ("batch", 64)))),
                    batch=BatchRange(1, 4, 4), resolution=ResolutionRange(True, (56, 56), (28, 28), (112, 112), 14),
                    tools={"ijepa-deploy": "source", "onnx": "x", "onnxruntime": "x", "python": "3"})
    arts = {}
    for precision, sha in artifacts.items():
        art = Artifact(precision, onnx_name(precision), (FileRecord(onnx_name(precision), sha * 64, 10),), 10, 17,
                       Validation(True, "reference", {"min_cosine": 0.99999}), True, False)
        arts[precision] = with_identity(base, art)
    return dataclasses.replace(base, artifacts=arts)


def test_records_round_trip_through_json():
    m = manifest(fp32="a", fp16="b")
    data = json.loads(json.dumps(m.to_dict()))
    assert "folder" not in data and data["checkpoint"]["sha256"] is None  # required-but-null fields are kept
    assert "data_file" not in data["artifacts"]["fp32"]  # optional None fields are left out
    back = Manifest.from_dict(data)
    assert back == m and isinstance(back.io.outputs[0], TensorSpec) and back.batch.max == 4
    assert load_record(Preprocessing, dump_record(Preprocessing(224, 224, crop_pct=0.9, canon="imagenet"))).crop_pct == 0.9


def test_identity_is_every_file_and_what_changes_the_vectors():
    m = manifest(fp32="a")
    art = m.artifact("fp32")
    other_weights = dataclasses.replace(art, files=(FileRecord(art.file, "c" * 64, 10),))
    assert artifact_identity(m, other_weights) != art.identity  # same .onnx name, other bytes
    assert artifact_identity(dataclasses.replace(m, preprocessing=Preprocessing(56, 56, canon="imagenet",
                                                                                crop_pct=0.9)), art) != art.identity
    assert artifact_identity(dataclasses.replace(m, name="renamed", tools={}), art) == art.identity  # names don't


def test_manifest_refusals_name_the_field():
    data = manifest(fp32="a").to_dict()
    with pytest.raises(ManifestError, match="schema 2, written by an older"):
        Manifest.from_dict({**data, "schema_version": 2})
    with pytest.raises(ManifestError, match=r"field batch\.max"):
        Manifest.from_dict({**data, "batch": {"min": 1, "opt": 4, "max": "8"}})
    edited = json.loads(json.dumps(data))
    edited["artifacts"]["fp32"]["files"][0]["sha256"] = "d" * 64
    with pytest.raises(ManifestError, match=r"artifacts\.fp32\.identity is not the identity"):
        Manifest.from_dict(edited)
    with pytest.raises(ManifestError, match="min <= opt <= max"):
        Manifest.from_dict({**data, "batch": {"min": 4, "opt": 1, "max": 4}})


def test_plan_and_file_names_round_trip():
    name = plan_name("int8-cpu", gpu_slug("NVIDIA H100 80GB HBM3"), "10.13.3.9", stripped=True)
    assert name == "model_int8_cpu.nvidia-h100-80gb-hbm3.trt10.13.3.stripped.plan"
    parsed = parse_plan_name(name)
    assert (parsed.precision, parsed.gpu, parsed.version, parsed.stripped) == ("int8-cpu", "nvidia-h100-80gb-hbm3",
                                                                               "10.13.3", True)
    assert parse_plan_name("model.plan") is None and timing_cache_name("orin", "10.3.0.26") == "timing.orin.trt10.3.0.cache"
    assert plan_name("fp16", "${GPU_SLUG}", "${TRT_VERSION}") == "model_fp16.${GPU_SLUG}.trt${TRT_VERSION}.plan"
    assert data_name("model_fp32.onnx") == "model_fp32.onnx.data" and shard_names(3)[2] == "shard-000003.json"


def test_precision_facts():
    assert with_fp32(["int8", "fp16"]) == ["fp32", "fp16", "int8"] and with_fp32([]) == ["fp32"]
    assert PRECISIONS["fp8"].min_compute_capability == "8.9" and PRECISIONS["int8"].min_opset == 19
    assert not PRECISIONS["fp16"].openvino_fast and PRECISIONS["bf16"].mode_of == "fp32"
    arts = manifest(fp32="a", fp16="b").artifacts
    assert default_plan_precisions(arts) == ["fp16"] and default_plan_precisions({"fp32": arts["fp32"]}) == ["fp32"]
