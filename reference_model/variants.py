"""The registry of named I-JEPA variants (the architecture itself is `contract.architecture`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ijepa_deploy.contract.architecture import Architecture
from ijepa_deploy.contract.errors import UserError


@dataclass(frozen=True)
class Variant:
    name: str
    architecture: Architecture
    hub_id: str | None = None
    test_only: bool = False
    aliases: tuple[str, ...] = field(default=())
    description: str = ""


_VIT_H = dict(hidden_size=1280, num_layers=32, num_heads=16, mlp_size=5120)

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("vith14_1k", Architecture(**_VIT_H, image_size=224, patch_size=14),
                "facebook/ijepa_vith14_1k", aliases=("vith14",), description="ViT-H/14, ImageNet-1k, 224px"),
        Variant("vith14_22k", Architecture(**_VIT_H, image_size=224, patch_size=14),
                "facebook/ijepa_vith14_22k", description="ViT-H/14, ImageNet-22k, 224px"),
        Variant("vith16_1k", Architecture(**_VIT_H, image_size=448, patch_size=16),
                "facebook/ijepa_vith16_1k", aliases=("vith16",), description="ViT-H/16, ImageNet-1k, 448px"),
        Variant("vitg16_22k", Architecture(hidden_size=1408, num_layers=40, num_heads=16, mlp_size=6144,
                                           image_size=224, patch_size=16),
                "facebook/ijepa_vitg16_22k", aliases=("vitg16",), description="ViT-g/16, ImageNet-22k, 224px"),
        # Test-only: tiny random networks with the real structure, for fast tests. Not a real model.
        Variant("test-tiny-p14", Architecture(hidden_size=64, num_layers=2, num_heads=4, mlp_size=128,
                                              image_size=56, patch_size=14),
                test_only=True, description="TEST ONLY: tiny patch-14 network, no public weights"),
        Variant("test-tiny-p16", Architecture(hidden_size=96, num_layers=3, num_heads=6, mlp_size=192,
                                              image_size=64, patch_size=16),
                test_only=True, description="TEST ONLY: tiny patch-16 network, no public weights"),
    )
}

_ALIASES = {alias: v.name for v in VARIANTS.values() for alias in v.aliases}


class UnknownVariantError(UserError, ValueError):
    """A variant name that is not in the registry."""


def get_variant(name: str) -> Variant:
    """Look up a variant by name or alias; the error lists the valid names."""
    key = _ALIASES.get(name, name)
    if key not in VARIANTS:
        valid = ", ".join(sorted([*VARIANTS, *_ALIASES]))
        raise UnknownVariantError(f"unknown variant {name!r}; valid variants: {valid}")
    return VARIANTS[key]
