"""The I-JEPA encoder in PyTorch, written for export.

A ViT without a CLS token: patch embedding + position table, pre-norm blocks, final LayerNorm.
The embedding is the mean of the output tokens; an optional linear head on that mean gives the
logits of `IJepaForImageClassification`. The attention scale is applied to q before q @ k^T
(mathematically the same as scaling the scores; it is the form TensorRT fuses).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .position_embeddings import interpolate_position_table, sincos_position_table
from .variants import Architecture


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (B, N, D)
    embedding: torch.Tensor  # (B, D), mean over tokens
    logits: torch.Tensor | None = None  # (B, num_labels) when the model has a head


class PatchEmbedding(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        self.patch_size = arch.patch_size
        self.proj = nn.Conv2d(arch.num_channels, arch.hidden_size, kernel_size=arch.patch_size,
                              stride=arch.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, D, H/P, W/P) -> (B, N, D); pixels past a multiple of P are dropped.
        return self.proj(pixel_values).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        d = arch.hidden_size
        self.num_heads = arch.num_heads
        self.scale = arch.head_dim**-0.5
        self.query = nn.Linear(d, d, bias=arch.qkv_bias)
        self.key = nn.Linear(d, d, bias=arch.qkv_bias)
        self.value = nn.Linear(d, d, bias=arch.qkv_bias)
        self.proj = nn.Linear(d, d)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, -1).transpose(1, 2)  # (B, heads, N, head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.query(x) * self.scale)
        k = self._heads(self.key(x))
        v = self._heads(self.value(x))
        weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        out = (weights @ v).transpose(1, 2).flatten(2)
        return self.proj(out)


class MLP(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        self.fc1 = nn.Linear(arch.hidden_size, arch.mlp_size)
        self.fc2 = nn.Linear(arch.mlp_size, arch.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class Block(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        self.norm1 = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)
        self.attn = Attention(arch)
        self.norm2 = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)
        self.mlp = MLP(arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class IJepaEncoder(nn.Module):
    """I-JEPA ViT encoder with mean pooling and an optional classification head."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        self.patch_embed = PatchEmbedding(arch)
        self.pos_embed = nn.Parameter(torch.zeros(1, arch.num_patches, arch.hidden_size))
        self.blocks = nn.ModuleList(Block(arch) for _ in range(arch.num_layers))
        self.norm = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)
        self.head = nn.Linear(arch.hidden_size, arch.num_labels) if arch.num_labels else None

    def position_table(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """The (1, grid_h*grid_w, D) position table for a grid, interpolated as Hugging Face does."""
        return interpolate_position_table(self.pos_embed, grid_h, grid_w)

    def forward(self, pixel_values: torch.Tensor) -> EncoderOutput:
        p = self.arch.patch_size
        grid_h, grid_w = pixel_values.shape[-2] // p, pixel_values.shape[-1] // p
        x = self.patch_embed(pixel_values) + self.position_table(grid_h, grid_w)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        embedding = x.mean(dim=1)
        logits = self.head(embedding) if self.head is not None else None
        return EncoderOutput(last_hidden_state=x, embedding=embedding, logits=logits)

    @classmethod
    def empty(cls, arch: Architecture) -> "IJepaEncoder":
        """A model with uninitialised storage (no default init pass), to be filled by a loader."""
        with torch.device("meta"):
            model = cls(arch)
        return model.to_empty(device="cpu")

    @torch.no_grad()
    def init_random(self, seed: int = 0) -> "IJepaEncoder":
        """Seeded initialisation as the original I-JEPA code does it: truncated normal (std 0.02)
        weights, zero biases, per-depth rescaled output projections, fixed 2-D sin-cos positions."""
        gen = torch.Generator().manual_seed(seed)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                w = torch.randn(module.weight.shape, generator=gen).clamp_(-2.0, 2.0).mul_(0.02)
                module.weight.copy_(w)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        for depth, block in enumerate(self.blocks, start=1):
            block.attn.proj.weight.div_((2.0 * depth) ** 0.5)
            block.mlp.fc2.weight.div_((2.0 * depth) ** 0.5)
        self.pos_embed.copy_(sincos_position_table(self.arch.hidden_size, self.arch.grid_size))
        return self
