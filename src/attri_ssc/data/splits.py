"""Patient-level train/val/test split, stratified by N/P and seeded.

Each patient (case) lands in exactly one split. Within each stratum (N, P) the case ids
are sorted and shuffled with a generator seeded by (seed, stratum); the strata are then
interleaved by relative rank (a case at rank r of a stratum of n sits at (r + 0.5) / n),
and the first cases of that order fill test, the next val, the rest train. The result
depends only on the set of (id, label) pairs and the seed, not on input order, and every
split keeps the N/P proportions as closely as counts allow.

Counts: test = round(f_test · n) and val = round(f_val · n), each raised to 1 when its
fraction is positive and n >= 3 (so tiny folders still get a validation and a test
case); train keeps the rest (at least one).
"""

from __future__ import annotations

import numpy as np


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """(train, val, test) counts for ``n`` cases; see module doc."""
    if n < 1:
        raise ValueError(f"need at least one case to split, got {n}")
    _, f_val, f_test = fractions
    n_test = int(round(f_test * n))
    n_val = int(round(f_val * n))
    if n >= 3:
        n_test = max(n_test, 1 if f_test > 0 else 0)
        n_val = max(n_val, 1 if f_val > 0 else 0)
    while n_test + n_val > n - 1 and (n_test or n_val):
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def stratified_split(
    labels: dict[str, str], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, list[str]]:
    """Split case ids by patient.

    Args:
        labels: case id -> stratum label (e.g. 'N' / 'P').
        fractions: (train, val, test), non-negative, summing to 1.
        seed: split seed.

    Returns:
        {'train': [...], 'val': [...], 'test': [...]}, each sorted.
    """
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    strata = sorted(set(labels.values()))
    keyed: list[tuple[float, float, str]] = []
    for s_index, stratum in enumerate(strata):
        ids = sorted(cid for cid, lab in labels.items() if lab == stratum)
        rng = np.random.default_rng([seed, s_index, len(ids)])
        order = rng.permutation(len(ids))
        tiebreak = rng.random()
        for rank, pos in enumerate(order):
            keyed.append(((rank + 0.5) / len(ids), tiebreak, ids[pos]))
    keyed.sort()
    ordered = [cid for _, _, cid in keyed]
    _, n_val, n_test = split_counts(len(ordered), fractions)
    return {
        "train": sorted(ordered[n_test + n_val :]),
        "val": sorted(ordered[n_test : n_test + n_val]),
        "test": sorted(ordered[:n_test]),
    }


__all__ = ["split_counts", "stratified_split"]
