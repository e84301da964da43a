"""I-JEPA architectures: the numbers that define a model, and the registry of named variants."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ijepa_deploy.runtime.errors import UserError


@dataclass(frozen=True)
class Architecture:
    """The shape of an I-JEPA encoder (no CLS token; embedding = mean of output tokens)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_size: int
    image_size: int
    patch_size: int
    layer_norm_eps: float = 1e-6
    num_channels: int = 3
    qkv_bias: bool = True
    num_labels: int = 0  # > 0 adds the IJepaForImageClassification head

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def grid_size(self) -> int:
        """Patches per side at the native image size."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def gflops_per_image(self, height: int | None = None, width: int | None = None) -> float:
        """Multiply-add FLOPs (2 per MAC) of one forward pass, in GFLOP."""
        h = (height or self.image_size) // self.patch_size
        w = (width or self.image_size) // self.patch_size
        n, d, m = h * w, self.hidden_size, self.mlp_size
        patch = n * d * self.num_channels * self.patch_size**2
        per_layer = 4 * n * d * d + 2 * n * n * d + 2 * n * d * m
        return 2 * (patch + self.num_layers * per_layer) / 1e9

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"D={self.hidden_size}, layers={self.num_layers}, heads={self.num_heads}, mlp={self.mlp_size}, "
            f"image={self.image_size}, patch={self.patch_size}"
        )


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
