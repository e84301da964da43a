"""Checks a schema cannot express: ranges in order, outputs present, artifacts that agree with
their files, and identities that are the ones their files give."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ManifestError
from .identity import artifact_identity

if TYPE_CHECKING:
    from .manifest import Manifest


def check_consistency(manifest: "Manifest", where: str) -> None:
    b, r = manifest.batch, manifest.resolution
    if not b.min <= b.opt <= b.max:
        raise ManifestError(f"{where}: field batch: min <= opt <= max does not hold ({b.min}, {b.opt}, {b.max})")
    if any(lo > hi for lo, hi in zip(r.min, r.max)):
        raise ManifestError(f"{where}: field resolution: min {list(r.min)} exceeds max {list(r.max)}")
    if any(x % r.multiple_of for x in (*r.min, *r.max)):
        raise ManifestError(f"{where}: field resolution: sizes must be multiples of {r.multiple_of}")
    names = manifest.output_names
    if "embedding" not in names or "last_hidden_state" not in names:
        raise ManifestError(f"{where}: field io.outputs: needs last_hidden_state and embedding, has {names}")
    for key, art in manifest.artifacts.items():
        if art.precision != key:
            raise ManifestError(f"{where}: field artifacts.{key}.precision is {art.precision!r}")
        listed = {f.path for f in art.files}
        if art.file not in listed or (art.data_file and art.data_file not in listed):
            raise ManifestError(f"{where}: field artifacts.{key}.files must list {art.file} and its data file")
        if art.mode_of and art.mode_of not in manifest.artifacts:
            raise ManifestError(f"{where}: field artifacts.{key}.mode_of names {art.mode_of!r}, not exported")
        if art.identity != artifact_identity(manifest, art):
            raise ManifestError(f"{where}: field artifacts.{key}.identity is not the identity its files, "
                                "preprocessing and resolution give: the manifest was edited; re-export")
