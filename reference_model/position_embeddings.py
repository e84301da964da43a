"""Position tables: the fixed 2-D sin-cos table of the original model, and its interpolation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions.reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_position_table(dim: int, grid_size: int) -> torch.Tensor:
    """The (1, grid*grid, dim) 2-D sin-cos table of facebookresearch/ijepa, as its code builds it
    (meshgrid(w, h): the first half of each vector encodes the column, the second the row)."""
    coords = np.arange(grid_size, dtype=np.float64)
    grid_w, grid_h = np.meshgrid(coords, coords)  # the original meshgrid(w, h) order
    table = np.concatenate([_sincos_1d(dim // 2, grid_w), _sincos_1d(dim // 2, grid_h)], axis=1)
    return torch.from_numpy(table).float().unsqueeze(0)


def interpolate_position_table(table: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Resize a square (1, N0, D) table to (1, grid_h*grid_w, D): bicubic, `size=`,
    align_corners=False, H and W independent (Hugging Face's interpolate_pos_encoding)."""
    _, n0, dim = table.shape
    g = int(round(n0**0.5))
    if (grid_h, grid_w) == (g, g):
        return table
    square = table.reshape(1, g, g, dim).permute(0, 3, 1, 2)
    resized = F.interpolate(square, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
