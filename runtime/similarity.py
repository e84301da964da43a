"""Cosine similarity and the measures that say what low precision costs a user of the embeddings.

Pooled cosine against a reference is dominated by what all images share (a random ViT's common
component, a trained ViT's massive activation channels), so it stays near 1 while the part that
tells images apart is lost. The gates therefore use:
- centered cosine: the reference embeddings' mean over the evaluation set is removed from both
  sides before the cosine, per image;
- neighbour agreement: the overlap of each image's top-k neighbours under both;
- token centered cosine: the same on `last_hidden_state`, per token position.
"""

from __future__ import annotations

import numpy as np


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of `a` with the same row of `b` (float64; rows are the last axis)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-30)


def similarity_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity matrix between rows of `a` and rows of `b` (default: `a` with itself)."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = a if b is None else np.atleast_2d(np.asarray(b, dtype=np.float64))
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a @ b.T).astype(np.float32)


def centered_cosine(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-image cosine after removing the reference's mean embedding over the set: (N,)."""
    mean = np.asarray(ref, np.float64).mean(axis=0, keepdims=True)
    return cosine_rows(np.asarray(got, np.float64) - mean, np.asarray(ref, np.float64) - mean)


def token_centered_cosine(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-image mean over tokens of the token cosine after removing the reference's mean token at
    each position over the set: (N,). Catches spatial damage that pooling hides."""
    mean = np.asarray(ref, np.float64).mean(axis=0, keepdims=True)
    return cosine_rows(np.asarray(got, np.float64) - mean, np.asarray(ref, np.float64) - mean).mean(axis=-1)


def neighbours(embeddings: np.ndarray, k: int) -> np.ndarray:
    """Each row's k nearest other rows by centered cosine: (N, k) indices."""
    x = np.asarray(embeddings, np.float64)
    sim = similarity_matrix(x - x.mean(axis=0, keepdims=True)).astype(np.float64)
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def neighbour_agreement(got: np.ndarray, ref: np.ndarray, k: int = 5) -> float:
    """Mean overlap (0..1) of each image's top-k neighbours under `got` and under `ref`."""
    n = len(ref)
    k = min(k, n - 1)
    if k < 1:
        return 1.0
    a, b = neighbours(got, k), neighbours(ref, k)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


def compare(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], k: int = 5) -> dict:
    """Every figure of `got` against `ref` over one evaluation set (outputs by name, rows = images)."""
    emb, ref_emb = got["embedding"], ref["embedding"]
    n = len(ref_emb)
    centered = centered_cosine(emb, ref_emb)
    out = {
        "images": n,
        "pooled_cosine": float(cosine_rows(emb, ref_emb).min()),
        "centered_cosine": float(centered.min()),
        "centered_cosine_mean": float(centered.mean()),
        f"top{k}_agreement": neighbour_agreement(emb, ref_emb, k),
        "embedding_max_abs": float(np.abs(emb - ref_emb).max()),
    }
    if "last_hidden_state" in got and "last_hidden_state" in ref:
        out["token_centered_cosine"] = float(token_centered_cosine(got["last_hidden_state"],
                                                                   ref["last_hidden_state"]).min())
        out["max_abs"] = float(np.abs(got["last_hidden_state"] - ref["last_hidden_state"]).max())
    return out
