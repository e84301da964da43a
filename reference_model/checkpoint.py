"""Checkpoint loading: one function for every source an I-JEPA encoder comes from.

Sources: a Hugging Face directory (config.json + model.safetensors, sharded or not), a single
.safetensors file plus a variant, an original facebookresearch/ijepa .pth.tar (context or target
encoder), a Hub id (through huggingface_hub and its cache), or seeded random initialisation.
Every tensor is checked (names and shapes) before anything is copied, so a checkpoint never
half-loads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from ijepa_deploy.contract.canons import canon_preprocessing, training_note, with_canon_name
from ijepa_deploy.contract.errors import ManifestError, UserError
from ijepa_deploy.contract.integrity import sha256_files
from ijepa_deploy.contract.manifest import Preprocessing
from ijepa_deploy.contract.records import dump_record

from .model import IJepaEncoder
from .variants import Architecture, get_variant

Encoder = Literal["context", "target"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_SUFFIXES = (".safetensors", ".pth.tar", ".pth", ".pt", ".tar", ".bin")


class CheckpointError(UserError, ValueError):
    """A checkpoint could not be found, read or matched to an architecture."""


@dataclass
class LoadedCheckpoint:
    model: IJepaEncoder
    architecture: Architecture
    name: str  # default artifact folder name
    source: dict  # kind, location, sha256, encoder, seed ...
    preprocessing: Preprocessing
    id2label: dict[int, str] | None = None
    notes: list[str] = field(default_factory=list)


def load_checkpoint(
    checkpoint: str | Path | None = None,
    *,
    variant: str | None = None,
    random_init: bool = False,
    seed: int = 0,
    encoder: Encoder = "context",
) -> LoadedCheckpoint:
    """Load an I-JEPA encoder from any supported source; raises CheckpointError with one clear line."""
    if encoder not in ("context", "target"):
        raise CheckpointError(f"encoder must be 'context' or 'target', got {encoder!r}")
    if random_init or checkpoint is None:
        if not variant:
            raise CheckpointError("nothing to load: pass --checkpoint PATH_OR_HUB_ID, or --variant NAME with --random-init")
        if not random_init:
            v = get_variant(variant)
            if v.hub_id is None:
                raise CheckpointError(f"variant {v.name!r} has no public weights: use --random-init")
            return _load_hub(v.hub_id, variant=v.name, encoder=encoder)
        return _random(variant, seed)

    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return _load_hf_dir(path, source={"kind": "huggingface-dir", "location": str(path.resolve())})
    if path.is_file():
        if path.suffix == ".safetensors":
            return _load_safetensors_file(path, variant)
        return _load_original(path, variant, encoder)
    looks_like_path = str(checkpoint).startswith((".", "/", "~")) or str(checkpoint).endswith(_WEIGHT_SUFFIXES)
    if _HUB_ID.match(str(checkpoint)) and not looks_like_path:
        return _load_hub(str(checkpoint), variant=variant, encoder=encoder)
    raise CheckpointError(f"checkpoint not found: {checkpoint} (no such file or folder); "
                          "pass an existing path, a Hub id like facebook/ijepa_vith14_1k, or --random-init")


# ----------------------------------------------------------------------------- sources


def _random(variant: str, seed: int) -> LoadedCheckpoint:
    v = get_variant(variant)
    model = IJepaEncoder.empty(v.architecture).init_random(seed).eval()
    return LoadedCheckpoint(
        model=model, architecture=v.architecture, name=v.name,
        source={"kind": "random-init", "variant": v.name, "seed": seed, "sha256": None, "encoder": None},
        preprocessing=Preprocessing(v.architecture.image_size, v.architecture.image_size),
    )


def _load_hub(hub_id: str, *, variant: str | None, encoder: Encoder) -> LoadedCheckpoint:
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors"])
    except Exception as exc:  # network, auth, missing repo: all end the same way for the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"could not get {hub_id} from the Hugging Face Hub ({type(exc).__name__}: {reason[:160]}); "
            "offline, pass --checkpoint PATH to a downloaded copy, or --random-init"
        ) from None
    loaded = _load_hf_dir(Path(folder), source={"kind": "huggingface-hub", "location": hub_id})
    loaded.name = hub_id.split("/")[-1].removeprefix("ijepa_")
    return loaded


def _load_hf_dir(folder: Path, *, source: dict) -> LoadedCheckpoint:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder} is not a Hugging Face checkpoint folder: config.json is missing")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON ({exc})") from None
    arch, id2label = architecture_from_hf_config(config, config_path)

    files = _hf_weight_files(folder)
    state = {}
    for f in files:
        state.update(_read_safetensors(f))
    state = {k.removeprefix("ijepa."): v for k, v in state.items()}
    if arch.num_labels == 0 and "classifier.weight" in state:
        arch = _with_labels(arch, state["classifier.weight"].shape[0])
    renamed, file_names = hf_to_reference(state)
    model = _build_checked(arch, renamed, origin=str(folder), file_names=file_names)
    preprocessing = _preprocessing_from_folder(folder, arch)
    source = {**source, "sha256": sha256_files(files), "encoder": None, "files": [f.name for f in files]}
    note = training_note(source["kind"], preprocessing)
    return LoadedCheckpoint(model=model, architecture=arch, name=folder.resolve().name.removeprefix("ijepa_"),
                            source=source, preprocessing=preprocessing, id2label=id2label,
                            notes=[f"note: {note}"] if note else [])


def _load_safetensors_file(path: Path, variant: str | None) -> LoadedCheckpoint:
    if not variant:
        raise CheckpointError(f"{path} is a bare .safetensors file: pass --variant NAME so its architecture is known")
    v = get_variant(variant)
    state = {k.removeprefix("ijepa."): t for k, t in _read_safetensors(path).items()}
    arch = v.architecture
    if "classifier.weight" in state:
        arch = _with_labels(arch, state["classifier.weight"].shape[0])
    renamed, file_names = hf_to_reference(state)
    model = _build_checked(arch, renamed, origin=str(path), file_names=file_names)
    return LoadedCheckpoint(
        model=model, architecture=arch, name=v.name,
        source={"kind": "safetensors", "location": str(path.resolve()), "sha256": sha256_files([path]),
                "encoder": None, "variant": v.name},
        preprocessing=Preprocessing(arch.image_size, arch.image_size),
    )


def _load_original(path: Path, variant: str | None, encoder: Encoder) -> LoadedCheckpoint:
    try:
        try:  # zip checkpoints are memory-mapped (a ViT-H .pth.tar is ~10 GB)
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            payload = torch.load(path, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
    except Exception as exc:
        raise CheckpointError(
            f"cannot read {path} as a PyTorch checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "is the file complete and an original facebookresearch/ijepa .pth.tar?"
        ) from None
    key = "encoder" if encoder == "context" else "target_encoder"
    if not isinstance(payload, dict) or key not in payload:
        found = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} has no {key!r} network (found {found}); "
                              "expected an original I-JEPA checkpoint with 'encoder' and 'target_encoder'")
    state = {k.removeprefix("module."): v for k, v in payload[key].items()}
    del payload
    arch = get_variant(variant).architecture if variant else _infer_original_architecture(state, path)
    model = _build_checked(arch, original_to_reference(state, arch.hidden_size), origin=f"{path} [{key}]")
    return LoadedCheckpoint(
        model=model, architecture=arch, name=get_variant(variant).name if variant else path.name.split(".")[0],
        source={"kind": "original-ijepa", "location": str(path.resolve()), "sha256": sha256_files([path]),
                "encoder": encoder, "network_key": key, "variant": variant},
        # the canon the released checkpoints were trained (and timm evaluates them) with
        preprocessing=canon_preprocessing("imagenet", arch.image_size, arch.image_size, arch.image_size),
        notes=[f"loaded the {encoder} encoder ({key!r}) from {path.name}; preprocessing: the imagenet canon it was "
               "trained with (--preprocessing hf for Hugging Face's processor instead)"],
    )


# ----------------------------------------------------------------------------- name mapping


# Hugging Face file name prefix <-> this model's prefix; "{i}" is the layer index. One table, both ways.
_HF_NAMES = [
    ("embeddings.patch_embeddings.projection.", "patch_embed.proj."),
    ("embeddings.position_embeddings", "pos_embed"),
    ("encoder.layer.{i}.layernorm_before.", "blocks.{i}.norm1."),
    ("encoder.layer.{i}.layernorm_after.", "blocks.{i}.norm2."),
    ("encoder.layer.{i}.attention.attention.query.", "blocks.{i}.attn.query."),
    ("encoder.layer.{i}.attention.attention.key.", "blocks.{i}.attn.key."),
    ("encoder.layer.{i}.attention.attention.value.", "blocks.{i}.attn.value."),
    ("encoder.layer.{i}.attention.output.dense.", "blocks.{i}.attn.proj."),
    ("encoder.layer.{i}.intermediate.dense.", "blocks.{i}.mlp.fc1."),
    ("encoder.layer.{i}.output.dense.", "blocks.{i}.mlp.fc2."),
    ("layernorm.", "norm."),
    ("classifier.", "head."),
]


def _rename(name: str, to_reference: bool) -> str | None:
    for hf, ours in _HF_NAMES:
        src, dst = (hf, ours) if to_reference else (ours, hf)
        pattern = "^" + re.escape(src).replace(r"\{i\}", r"(\d+)") + ("$" if not src.endswith(".") else "")
        m = re.match(pattern, name)
        if m:
            return dst.replace("{i}", m[1]) + name[m.end():] if "{i}" in src else dst + name[m.end():]
    return None


def hf_to_reference(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename Hugging Face I-JEPA tensors (the Hub's public key names) to this model's names.
    Returns the renamed tensors and, for error messages, each new name's name in the file."""
    out, file_names = {}, {}
    for file_name, tensor in state.items():
        if file_name.startswith(("pooler.", "embeddings.mask_token")):
            continue  # meaningless without a CLS token / only used for masked pre-training
        name = _rename(file_name, to_reference=True) or file_name
        out[name] = tensor
        file_names[name] = file_name
    return out, file_names


def reference_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This model's tensors under the Hugging Face file names (the inverse of hf_to_reference)."""
    return {hf: t for name, t in state.items() if (hf := _rename(name, to_reference=False))}


def save_hf_checkpoint(model: IJepaEncoder, folder: Path) -> Path:
    """Write `model` as a Hugging Face I-JEPA folder (config.json + model.safetensors)."""
    from safetensors.torch import save_file

    arch = model.arch
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["IJepaForImageClassification" if arch.num_labels else "IJepaModel"],
              "model_type": "ijepa", "hidden_size": arch.hidden_size, "num_hidden_layers": arch.num_layers,
              "num_attention_heads": arch.num_heads, "intermediate_size": arch.mlp_size, "hidden_act": "gelu",
              "image_size": arch.image_size, "patch_size": arch.patch_size, "layer_norm_eps": arch.layer_norm_eps,
              "num_channels": arch.num_channels, "qkv_bias": arch.qkv_bias, "hidden_dropout_prob": 0.0,
              "attention_probs_dropout_prob": 0.0}
    if arch.num_labels:
        config["id2label"] = {str(i): str(i) for i in range(arch.num_labels)}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.detach().contiguous() for k, v in reference_to_hf(model.state_dict()).items()}
    save_file(state, str(folder / "model.safetensors"))
    return folder


def original_to_reference(state: dict[str, torch.Tensor], hidden_size: int) -> dict[str, torch.Tensor]:
    """Rename original facebookresearch/ijepa encoder tensors and split the fused qkv."""
    out = {}
    for name, tensor in state.items():
        m = re.match(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", name)
        if m and tensor.shape[0] == 3 * hidden_size:
            for i, part in enumerate(("query", "key", "value")):
                out[f"blocks.{m[1]}.attn.{part}.{m[2]}"] = tensor[i * hidden_size:(i + 1) * hidden_size]
        else:
            out[name] = tensor
    return out


# ----------------------------------------------------------------------------- checks


def _build_checked(arch: Architecture, state: dict[str, torch.Tensor], *, origin: str,
                   file_names: dict[str, str] | None = None) -> IJepaEncoder:
    with torch.device("meta"):
        model = IJepaEncoder(arch)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [(file_names or {}).get(k, k) for k in state if k not in expected]
    misshaped = [f"{k} {tuple(state[k].shape)} != {expected[k]}" for k in expected
                 if k in state and tuple(state[k].shape) != expected[k]]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    if problems:
        raise CheckpointError(f"{origin} does not fit the architecture ({arch.describe()}): {'; '.join(problems)}")
    model.load_state_dict({k: v.float().contiguous() for k, v in state.items()}, strict=True, assign=True)
    return model.eval()


def architecture_from_hf_config(config: dict, where: Path | str) -> tuple[Architecture, dict[int, str] | None]:
    """Architecture and labels from a Hugging Face I-JEPA config.json."""
    if config.get("model_type") not in ("ijepa", None):
        raise CheckpointError(f"{where}: model_type is {config.get('model_type')!r}, not 'ijepa'")
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{where}: hidden_act {config['hidden_act']!r} is not supported (only exact 'gelu')")
    is_classifier = any("Classification" in a for a in config.get("architectures") or [])
    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()} if is_classifier else None
    try:
        arch = Architecture(
            hidden_size=int(config["hidden_size"]), num_layers=int(config["num_hidden_layers"]),
            num_heads=int(config["num_attention_heads"]), mlp_size=int(config["intermediate_size"]),
            image_size=_as_int_size(config["image_size"]), patch_size=_as_int_size(config["patch_size"]),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)), num_channels=int(config.get("num_channels", 3)),
            qkv_bias=bool(config.get("qkv_bias", True)), num_labels=len(id2label) if id2label else 0,
        )
    except KeyError as exc:
        raise CheckpointError(f"{where}: config.json lacks {exc.args[0]!r}") from None
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    return arch, id2label


def _as_int_size(value) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"non-square size {value} is not supported")
        value = value[0]
    return int(value)


def _with_labels(arch: Architecture, num_labels: int) -> Architecture:
    return Architecture(**{**arch.to_dict(), "num_labels": int(num_labels)})


def _infer_original_architecture(state: dict[str, torch.Tensor], path: Path) -> Architecture:
    try:
        d = state["pos_embed"].shape[-1]
        n0 = state["pos_embed"].shape[1]
        patch = state["patch_embed.proj.weight"].shape[-1]
        layers = 1 + max(int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
        mlp = state["blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError):
        raise CheckpointError(f"{path}: cannot infer the architecture from its tensors; pass --variant NAME") from None
    image = int(round(n0**0.5)) * patch
    for name in ("vith14_1k", "vith16_1k", "vitg16_22k"):
        a = get_variant(name).architecture
        if (a.hidden_size, a.num_layers, a.mlp_size, a.patch_size, a.image_size) == (d, layers, mlp, patch, image):
            return a
    raise CheckpointError(f"{path}: architecture D={d}, layers={layers}, patch={patch} is not a known variant; "
                          "pass --variant NAME (heads cannot be inferred from tensor shapes)")


# ----------------------------------------------------------------------------- files


def _hf_weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index ({exc})") from None
        files = [folder / n for n in names]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise CheckpointError(f"{folder}: shards listed in the index are missing: {', '.join(absent[:3])}")
        return files
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise CheckpointError(f"{folder}: no model.safetensors or model.safetensors.index.json")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read {path} ({str(exc).splitlines()[0][:160]}); the file is corrupt or truncated") from None


def _preprocessing_from_folder(folder: Path, arch: Architecture) -> Preprocessing:
    pre = Preprocessing(arch.image_size, arch.image_size)
    cfg_path = folder / "preprocessor_config.json"
    if not cfg_path.is_file():
        return pre
    try:
        cfg = json.loads(cfg_path.read_text())
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
        size = cfg.get("size") or {}
        if isinstance(size, int):
            size = {"height": size, "width": size}
        if isinstance(size, dict) and "height" in size and "width" in size:
            pre = replace(pre, height=int(size["height"]), width=int(size["width"]))
        resample = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}.get(cfg.get("resample", 2))
        if resample is None:
            raise ValueError(f"resample {cfg.get('resample')!r} is not supported (0, 1, 2 or 3)")
        rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
        if cfg.get("do_normalize", True):
            mean = tuple(float(x) for x in cfg.get("image_mean", pre.mean))
            std = tuple(float(x) for x in cfg.get("image_std", pre.std))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        spec = {**dump_record(pre), "resample": resample, "rescale_factor": rescale, "mean": list(mean),
                "std": list(std)}
        return with_canon_name(Preprocessing.from_dict(spec, str(cfg_path)))
    except (OSError, ValueError, TypeError, ManifestError) as exc:
        raise CheckpointError(f"{cfg_path} is not a usable ViTImageProcessor config ({str(exc)[:200]}); fix or "
                              "remove it (the Hub's I-JEPA processors resize bilinear with mean = std = 0.5)") from None

