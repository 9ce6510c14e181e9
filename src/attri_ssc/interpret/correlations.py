"""Correlation analysis of attribute pairs (paper Section 4.2.3, Table 3).

For every pair of supervised attributes: Pearson r and its two-sided p-value on the
ground truth (``r_sample``) and on the model's predictions â = W ũ (``r_recon``), both over
the same held-out items. Alongside: the atoms each attribute uses (the non-zero entries of
its row of W, strongest first) and the atoms shared between attributes, the mechanism the
paper credits for keeping correlated attributes correlated.

In 2D the items are slices and several come from one patient, so the p-values treat
dependent samples as independent and are optimistic; the number of cases is reported.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Sequence

import numpy as np
from scipy import stats


def pearson(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    """(r, two-sided p) of two 1-D arrays; (None, None) when either is constant or n < 3."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None
    res = stats.pearsonr(x, y)
    return float(res.statistic), float(res.pvalue)


def atoms_by_attribute(weight: np.ndarray, names: Sequence[str]) -> dict[str, list[dict[str, float]]]:
    """name → [{atom, weight}] over the non-zero entries of that row of W, by |W| descending."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != len(names):
        raise ValueError(f"weight must be ({len(names)}, K), got shape {w.shape}")
    out = {}
    for i, name in enumerate(names):
        order = np.argsort(-np.abs(w[i]), kind="stable")
        out[name] = [{"atom": int(j), "weight": float(w[i, j])} for j in order if w[i, j] != 0]
    return out


def shared_atoms(atoms: dict[str, list[dict[str, float]]]) -> dict[int, list[str]]:
    """atom → the attributes using it, for atoms used by two or more attributes."""
    users: dict[int, list[str]] = {}
    for name, entries in atoms.items():
        for e in entries:
            users.setdefault(int(e["atom"]), []).append(name)
    return {a: names for a, names in sorted(users.items()) if len(names) > 1}


def correlation_analysis(truth: np.ndarray, predicted: np.ndarray, names: Sequence[str], weight: np.ndarray,
                         case_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Table 3 for every attribute pair, plus atoms per attribute and shared atoms.

    Args:
        truth: (N, A) ground-truth attributes of held-out items.
        predicted: (N, A) the model's â for the same items (any affine scale: Pearson r
            does not depend on it).
        names: the A attribute names.
        weight: the effective mapper weight W (A, K).
        case_ids: the items' case ids (only counted).
    Returns:
        JSON-ready dict with ``pairs`` (list of {a, b, r_sample, p_sample, r_recon,
        p_recon, shared_atoms}), ``atoms``, ``shared``, ``n_items``, ``n_cases``.
    """
    truth = np.asarray(truth, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if truth.shape != predicted.shape or truth.ndim != 2 or truth.shape[1] != len(names):
        raise ValueError(f"truth and predicted must both be (N, {len(names)}), got {truth.shape} and {predicted.shape}")
    atoms = atoms_by_attribute(weight, names)
    pairs = []
    for i, j in combinations(range(len(names)), 2):
        r_s, p_s = pearson(truth[:, i], truth[:, j])
        r_r, p_r = pearson(predicted[:, i], predicted[:, j])
        common = sorted({e["atom"] for e in atoms[names[i]]} & {e["atom"] for e in atoms[names[j]]})
        pairs.append({"a": names[i], "b": names[j], "r_sample": r_s, "p_sample": p_s, "r_recon": r_r,
                      "p_recon": p_r, "shared_atoms": [int(a) for a in common]})
    return {
        "n_items": int(truth.shape[0]),
        "n_cases": None if case_ids is None else len(set(case_ids)),
        "pairs": pairs,
        "atoms": atoms,
        "shared": {str(a): n for a, n in shared_atoms(atoms).items()},
    }


def correlations_markdown(result: dict[str, Any]) -> str:
    """Table 3 in Markdown plus the atoms per attribute."""

    def fmt(v: Any, nd: int = 3) -> str:
        if v is None:
            return "n/a"
        return f"{v:.{nd}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{nd}f}"

    cases = "" if result["n_cases"] is None else f" from {result['n_cases']} cases"
    lines = [
        "# Correlation of attribute pairs (Table 3)",
        "",
        f"Pearson r and two-sided p over {result['n_items']} held-out items{cases}: ground truth "
        "(r_sample) and the model's â = W ũ (r_recon).",
        "",
        "| attribute pair | r_sample | p-value | r_recon | p-value | shared atoms |",
        "|---|---|---|---|---|---|",
    ]
    for p in result["pairs"]:
        shared = ", ".join(str(a) for a in p["shared_atoms"]) or "none"
        lines.append(f"| {p['a']} vs {p['b']} | {fmt(p['r_sample'])} | {fmt(p['p_sample'])} | {fmt(p['r_recon'])} | "
                     f"{fmt(p['p_recon'])} | {shared} |")
    lines += ["", "## Atoms per attribute (non-zero W entries, strongest first)", "",
              "| attribute | atoms (weight) |", "|---|---|"]
    for name, entries in result["atoms"].items():
        lines.append(f"| {name} | " + ", ".join(f"{e['atom']} ({e['weight']:+.3f})" for e in entries) + " |")
    shared = result["shared"]
    lines += ["", "Atoms shared between attributes: "
              + ("; ".join(f"atom {a}: {', '.join(n)}" for a, n in shared.items()) if shared else "none") + "."]
    return "\n".join(lines) + "\n"


__all__ = ["atoms_by_attribute", "correlation_analysis", "correlations_markdown", "pearson", "shared_atoms"]
