"""The numbers that define an I-JEPA encoder: a ViT without a CLS token whose embedding is the mean
of its output tokens. Torch-free, so the manifest, the runtime and the benchmark share one class."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Architecture:
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

    def tokens(self, height: int | None = None, width: int | None = None) -> int:
        return ((height or self.image_size) // self.patch_size) * ((width or self.image_size) // self.patch_size)

    def gflops_per_image(self, height: int | None = None, width: int | None = None) -> float:
        """Multiply-add FLOPs (2 per MAC) of one forward pass, in GFLOP."""
        n, d, m = self.tokens(height, width), self.hidden_size, self.mlp_size
        patch = n * d * self.num_channels * self.patch_size**2
        per_layer = 4 * n * d * d + 2 * n * n * d + 2 * n * d * m
        return 2 * (patch + self.num_layers * per_layer) / 1e9

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"D={self.hidden_size}, layers={self.num_layers}, heads={self.num_heads}, mlp={self.mlp_size}, "
                f"image={self.image_size}, patch={self.patch_size}")
