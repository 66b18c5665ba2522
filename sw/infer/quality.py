"""Quality of quantized sentence embeddings against full precision.

- cosine: per sentence, the cosine between its embedding and the full-precision one;
- ranking agreement: Spearman's rho between the pairs' similarity scores (cosine of the
  two sentences' embeddings) under the plan and under full precision.
"""

from __future__ import annotations

import numpy as np


def rank(values) -> np.ndarray:
    """Ranks 1..n, tied values sharing their average rank (float64)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_vals = values[order]
    start = 0
    while start < len(values):
        stop = start + 1
        while stop < len(values) and sorted_vals[stop] == sorted_vals[start]:
            stop += 1
        ranks[order[start:stop]] = (start + stop + 1) / 2      # mean of ranks start+1..stop
        start = stop
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation: Pearson's r of the (tie-averaged) ranks."""
    rx, ry = rank(x), rank(y)
    if len(rx) != len(ry) or len(rx) < 2:
        raise ValueError("spearman needs two equally long sequences of at least 2 values")
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / denom) if denom else 0.0


def cosines(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays."""
    a = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    return (a * b).sum(1)


def pair_scores(embeddings: dict[str, np.ndarray], pairs) -> np.ndarray:
    """Cosine similarity of each pair's two sentence embeddings."""
    a = np.stack([embeddings[p.a] for p in pairs])
    b = np.stack([embeddings[p.b] for p in pairs])
    return cosines(a, b)


def quality(embeddings: dict[str, np.ndarray], reference: dict[str, np.ndarray], pairs) -> dict:
    """Mean and worst cosine to full precision over the sentences, and Spearman of pair scores."""
    names = list(reference)
    cos = cosines(np.stack([embeddings[s] for s in names]), np.stack([reference[s] for s in names]))
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "spearman": spearman(pair_scores(embeddings, pairs), pair_scores(reference, pairs))}
