"""Attribute-based disentanglement metrics of AR-VAE (Pati & Lerch, 2020).

Given latent codes ``latents`` (N, D) — atom usages or the mapped attributes â for
Attri-SSC-VAE, the posterior means μ for the VAE baselines — and ground-truth
``attributes`` (N, A), this module computes the five scores AR-VAE reports:

- **Interpretability**: for each attribute, pick one latent dimension (the one with the
  largest mutual information with it, or the one the caller assigns), fit a 1-D linear
  regression attribute ~ latent and take its R² (sklearn ``LinearRegression.score``);
  mean over attributes. In [0, 1].
- **MIG** (mutual information gap, Chen et al., 2018): for each attribute, the gap
  between the largest and second-largest MI over latent dimensions, divided by the
  attribute's entropy; mean over attributes. In [0, 1]; needs D >= 2.
- **SAP** (separated attribute predictability, Kumar et al., 2018), continuous form: score
  matrix ``S[d, a]`` = R² of a linear regression of attribute a on latent d alone (the
  squared Pearson correlation; 0 for a constant latent); for each attribute the gap
  between its two best dimensions; mean over attributes. In [0, 1]; needs D >= 2. Binary
  attributes are treated as continuous (point-biserial R²); the classification variant
  for categorical attributes is not implemented.
- **SCC** (Spearman correlation coefficient): ``|ρ|`` between each attribute and a latent
  dimension — the assigned one if given, else the most correlated one — with ``|ρ|`` set to
  0 where the two-sided p-value exceeds ``alpha`` (AR-VAE uses 0.05; ``alpha=None``
  keeps every ρ); mean over attributes. In [0, 1].
- **Modularity** (Ridgeway & Tsitsiklis, 2018): for each latent d with MI row ``m_d``
  over attributes, ``1 − (Σ_a m_da² − max_a m_da²) / (max_a m_da² · (A − 1))``, 0 where the
  latent has no MI with any attribute; mean over latent dimensions. In [0, 1]; needs
  A >= 2. It rewards each dimension depending on one attribute only, not informativeness:
  a pure-noise dimension can score anywhere in [0, 1].

Differences from AR-VAE's own code, on purpose:

- Mutual information is the plug-in estimate on **discretised** variables
  (``sklearn.metrics.mutual_info_score``, nats) rather than sklearn's k-NN estimator
  ``mutual_info_regression``: it is deterministic (the k-NN one adds random noise), and
  the entropy that normalises MIG is a true upper bound of the MI, so MIG stays in
  [0, 1]. Each variable is cut into ``bins`` **equal-frequency** (quantile) bins, which
  keeps the estimate invariant to monotone rescaling (as MI is) and stops heavy-tailed
  codes collapsing into one bin; a variable with at most ``bins`` distinct values (a
  binary attribute, a dead atom) is used as it is. The plug-in MI of independent
  variables is biased upwards by about ``(bins − 1)² / (2N)`` nats: use ``bins`` well
  below ``sqrt(N)`` (the default 10 suits a few hundred samples or more).
- Dimensions are chosen by the caller's ``attribute_dims`` when given (AR-VAE regularises
  dimension a for attribute a), which is what the interpretability of a fixed
  attribute → dimension assignment means; without it the AR-VAE choice (argmax) is used.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mutual_info_score

__all__ = [
    "discretize",
    "mutual_information_matrix",
    "attribute_entropies",
    "interpretability",
    "mig",
    "sap",
    "scc",
    "modularity",
    "compute_all",
]

DEFAULT_BINS = 10
DEFAULT_ALPHA = 0.05


# ---------------------------------------------------------------- input handling


def _as_matrix(values: Any, name: str) -> np.ndarray:
    """Array-like or torch tensor (N, F) -> float64 NumPy (N, F); rejects NaN/inf."""
    if hasattr(values, "detach"):  # torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, features), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains non-finite values")
    return array


def _check_inputs(latents: Any, attributes: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate latents (N, D) and attributes (N, A); returns float64 copies."""
    z = _as_matrix(latents, "latents")
    a = _as_matrix(attributes, "attributes")
    if z.shape[0] != a.shape[0]:
        raise ValueError(f"latents and attributes must have the same N, got {z.shape[0]} and {a.shape[0]}")
    if z.shape[0] < 3:
        raise ValueError(f"need at least 3 samples, got N={z.shape[0]}")
    if z.shape[1] < 1 or a.shape[1] < 1:
        raise ValueError(f"need at least one latent and one attribute, got D={z.shape[1]}, A={a.shape[1]}")
    constant = [j for j in range(a.shape[1]) if np.ptp(a[:, j]) == 0]
    if constant:
        raise ValueError(f"attributes {constant} are constant over the samples; the metrics are undefined for them")
    return z, a


def _check_bins(bins: int) -> int:
    if not isinstance(bins, (int, np.integer)) or isinstance(bins, bool) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got bins={bins!r}")
    return int(bins)


def _check_alpha(alpha: float | None) -> float | None:
    if alpha is not None and not (isinstance(alpha, (int, float)) and 0 < alpha <= 1):
        raise ValueError(f"alpha must be in (0, 1] or None, got alpha={alpha!r}")
    return alpha


def _check_attribute_dims(attribute_dims: Sequence[int] | None, n_latents: int, n_attributes: int) -> np.ndarray | None:
    if attribute_dims is None:
        return None
    dims = np.asarray(list(attribute_dims))
    if dims.shape != (n_attributes,) or not np.issubdtype(dims.dtype, np.integer):
        raise ValueError(
            f"attribute_dims must hold one integer latent index per attribute ({n_attributes}), got {attribute_dims!r}"
        )
    if dims.min() < 0 or dims.max() >= n_latents:
        raise ValueError(f"attribute_dims must lie in [0, {n_latents}), got {attribute_dims!r}")
    return dims.astype(np.int64)


# ---------------------------------------------------------------- mutual information


def discretize(values: Any, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Equal-frequency bin labels of one variable.

    Args:
        values: (N,) samples of one variable.
        bins: at most this many bins, >= 2.
    Returns:
        (N,) int64 labels. With at most ``bins`` distinct values, label = rank of the
        distinct value (the variable is kept as it is); otherwise the cut points are the
        ``k / bins`` quantiles (k = 1..bins−1), duplicates merged, and bins are
        ``(−inf, c₁], (c₁, c₂], …, (c_last, inf)``: a value equal to a cut point goes to the
        lower bin, so a mass of ties at the minimum (the zeros of a sparse code, an infarct
        volume of 0 in normal cases) gets a bin of its own.
    """
    bins = _check_bins(bins)
    v = np.asarray(values, dtype=np.float64).ravel()
    distinct = np.unique(v)
    if distinct.size <= bins:
        return np.searchsorted(distinct, v).astype(np.int64)
    cuts = np.unique(np.quantile(v, np.arange(1, bins) / bins))
    return np.searchsorted(cuts, v, side="left").astype(np.int64)


def mutual_information_matrix(latents: Any, attributes: Any, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Plug-in MI (nats) between every latent dimension and every attribute.

    Args:
        latents: (N, D).
        attributes: (N, A).
        bins: bins per variable for :func:`discretize`.
    Returns:
        (D, A) MI matrix, ``mutual_info_score(discretize(attr_a), discretize(latent_d))``.
    """
    z, a = _check_inputs(latents, attributes)
    return _mi_matrix(z, a, _check_bins(bins))


def attribute_entropies(attributes: Any, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Entropy (nats) of each discretised attribute, (N, A) -> (A,); the MIG normaliser."""
    a = _as_matrix(attributes, "attributes")
    bins = _check_bins(bins)
    return np.array([_entropy(discretize(a[:, j], bins)) for j in range(a.shape[1])])


def _entropy(labels: np.ndarray) -> float:
    return float(mutual_info_score(labels, labels))


def _mi_matrix(z: np.ndarray, a: np.ndarray, bins: int) -> np.ndarray:
    z_labels = [discretize(z[:, d], bins) for d in range(z.shape[1])]
    a_labels = [discretize(a[:, j], bins) for j in range(a.shape[1])]
    mi = np.zeros((z.shape[1], a.shape[1]))
    for d, zl in enumerate(z_labels):
        for j, al in enumerate(a_labels):
            mi[d, j] = mutual_info_score(al, zl)
    return np.clip(mi, 0.0, None)  # rounding can give -1e-17


# ---------------------------------------------------------------- per-attribute scores


def _interpretability_scores(
    z: np.ndarray, a: np.ndarray, dims: np.ndarray | None, mi: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(A,) R² of each attribute on its dimension, and the (A,) dimensions used."""
    if dims is None:
        assert mi is not None
        dims = np.argmax(mi, axis=0)
    scores = np.empty(a.shape[1])
    for j, d in enumerate(dims):
        x = z[:, d : d + 1]
        scores[j] = LinearRegression().fit(x, a[:, j]).score(x, a[:, j]) if np.ptp(x) > 0 else 0.0
    return np.clip(scores, 0.0, 1.0), np.asarray(dims, dtype=np.int64)


def _mig_scores(mi: np.ndarray, entropies: np.ndarray) -> np.ndarray:
    """(A,) normalised gap between the two largest entries of each MI column."""
    if mi.shape[0] < 2:
        raise ValueError(f"MIG needs at least 2 latent dimensions, got D={mi.shape[0]}")
    top = np.sort(mi, axis=0)[::-1]  # (D, A), descending
    return np.clip((top[0] - top[1]) / entropies, 0.0, 1.0)


def _r2_matrix(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """(D, A) squared Pearson correlation = R² of the 1-D regression a_j ~ z_d; 0 for constant z_d."""
    zc = z - z.mean(axis=0)
    ac = a - a.mean(axis=0)
    z_norm = np.sqrt((zc**2).sum(axis=0))  # (D,)
    a_norm = np.sqrt((ac**2).sum(axis=0))  # (A,), > 0: attributes are checked non-constant
    alive = np.ptp(z, axis=0) > 0  # a constant latent predicts nothing: R² = 0
    corr = np.zeros((z.shape[1], a.shape[1]))
    corr[alive] = (zc[:, alive].T @ ac) / (z_norm[alive, None] * a_norm[None, :])
    return np.clip(corr**2, 0.0, 1.0)


def _sap_scores(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    if z.shape[1] < 2:
        raise ValueError(f"SAP needs at least 2 latent dimensions, got D={z.shape[1]}")
    top = np.sort(_r2_matrix(z, a), axis=0)[::-1]  # (D, A), descending
    return top[0] - top[1]


def _spearman_matrix(z: np.ndarray, a: np.ndarray, alpha: float | None) -> np.ndarray:
    """(D, A) |Spearman ρ|, zeroed where p > alpha (if alpha is given) or ρ is undefined."""
    d, n_attr = z.shape[1], a.shape[1]
    rho = np.full((d, n_attr), np.nan)
    pval = np.full((d, n_attr), np.nan)
    # scipy returns one NaN for the whole matrix if any column is constant (dead atoms are
    # common), so correlate only the varying latents; constant ones keep ρ undefined -> 0.
    live = np.flatnonzero(np.ptp(z, axis=0) > 0)
    if live.size:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r, p = spearmanr(np.hstack([z[:, live], a]), axis=0)
        r = np.atleast_2d(np.asarray(r, dtype=np.float64))
        p = np.atleast_2d(np.asarray(p, dtype=np.float64))
        if r.shape == (1, 1):  # scipy returns a scalar for exactly two columns
            r = np.array([[1.0, r[0, 0]], [r[0, 0], 1.0]])
            p = np.array([[0.0, p[0, 0]], [p[0, 0], 0.0]])
        n_live = live.size
        rho[live] = r[:n_live, n_live: n_live + n_attr]
        pval[live] = p[:n_live, n_live: n_live + n_attr]
    score = np.abs(rho)
    undefined = ~np.isfinite(score)
    if alpha is not None:
        undefined |= ~(pval <= alpha)
    score[undefined] = 0.0
    return np.clip(score, 0.0, 1.0)


def _scc_scores(
    z: np.ndarray, a: np.ndarray, dims: np.ndarray | None, alpha: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(A,) |ρ| of each attribute with its dimension, and the (A,) dimensions used."""
    matrix = _spearman_matrix(z, a, alpha)
    if dims is None:
        dims = np.argmax(matrix, axis=0)
    return matrix[dims, np.arange(a.shape[1])], np.asarray(dims, dtype=np.int64)


def _modularity_scores(mi: np.ndarray) -> np.ndarray:
    """(D,) Ridgeway & Tsitsiklis modularity of each latent dimension from MI (D, A)."""
    n_attr = mi.shape[1]
    if n_attr < 2:
        raise ValueError(f"modularity needs at least 2 attributes, got A={n_attr}")
    sq = mi**2
    peak = sq.max(axis=1)
    scores = np.zeros(mi.shape[0])
    informative = peak > 0
    deviation = (sq[informative].sum(axis=1) - peak[informative]) / (peak[informative] * (n_attr - 1))
    scores[informative] = 1.0 - deviation
    return np.clip(scores, 0.0, 1.0)


# ---------------------------------------------------------------- public metrics


def interpretability(
    latents: Any, attributes: Any, attribute_dims: Sequence[int] | None = None, bins: int = DEFAULT_BINS
) -> float:
    """AR-VAE interpretability: mean R² of each attribute regressed on one latent dimension.

    Args:
        latents: (N, D) codes.
        attributes: (N, A) attribute values (no constant column).
        attribute_dims: (A,) latent index per attribute; ``None`` picks, per attribute, the
            dimension with the largest (discretised) MI, as AR-VAE does.
        bins: bins for the MI used to pick dimensions.
    Returns:
        Mean over attributes of the 1-D linear-regression R², in [0, 1].
    """
    z, a = _check_inputs(latents, attributes)
    dims = _check_attribute_dims(attribute_dims, z.shape[1], a.shape[1])
    mi = _mi_matrix(z, a, _check_bins(bins)) if dims is None else None
    return float(_interpretability_scores(z, a, dims, mi)[0].mean())


def mig(latents: Any, attributes: Any, bins: int = DEFAULT_BINS) -> float:
    """Mutual information gap: mean over attributes of (MI₁ − MI₂) / H(attribute).

    Args:
        latents: (N, D) codes, D >= 2.
        attributes: (N, A) attribute values.
        bins: equal-frequency bins per variable (see module docstring).
    Returns:
        MIG in [0, 1].
    """
    z, a = _check_inputs(latents, attributes)
    bins = _check_bins(bins)
    entropies = np.array([_entropy(discretize(a[:, j], bins)) for j in range(a.shape[1])])
    return float(_mig_scores(_mi_matrix(z, a, bins), entropies).mean())


def sap(latents: Any, attributes: Any) -> float:
    """Separated attribute predictability (continuous attributes).

    Args:
        latents: (N, D) codes, D >= 2.
        attributes: (N, A) attribute values.
    Returns:
        Mean over attributes of the gap between the best and second-best single-latent
        linear-regression R², in [0, 1].
    """
    z, a = _check_inputs(latents, attributes)
    return float(_sap_scores(z, a).mean())


def scc(
    latents: Any,
    attributes: Any,
    attribute_dims: Sequence[int] | None = None,
    alpha: float | None = DEFAULT_ALPHA,
) -> float:
    """Spearman correlation coefficient score.

    Args:
        latents: (N, D) codes.
        attributes: (N, A) attribute values.
        attribute_dims: (A,) latent index per attribute; ``None`` uses each attribute's most
            correlated dimension (AR-VAE).
        alpha: significance level; ``|ρ|`` with two-sided p-value above it counts as 0
            (AR-VAE: 0.05). ``None`` keeps every ``|ρ|``.
    Returns:
        Mean over attributes of ``|ρ|``, in [0, 1].
    """
    z, a = _check_inputs(latents, attributes)
    dims = _check_attribute_dims(attribute_dims, z.shape[1], a.shape[1])
    return float(_scc_scores(z, a, dims, _check_alpha(alpha))[0].mean())


def modularity(latents: Any, attributes: Any, bins: int = DEFAULT_BINS) -> float:
    """Ridgeway & Tsitsiklis modularity, mean over latent dimensions.

    Args:
        latents: (N, D) codes.
        attributes: (N, A) attribute values, A >= 2.
        bins: equal-frequency bins per variable for the MI.
    Returns:
        Modularity in [0, 1]; a dimension with zero MI with every attribute (e.g. a dead
        atom) scores 0, as in AR-VAE.
    """
    z, a = _check_inputs(latents, attributes)
    return float(_modularity_scores(_mi_matrix(z, a, _check_bins(bins))).mean())


def compute_all(
    latents: Any,
    attributes: Any,
    attribute_dims: Sequence[int] | None = None,
    bins: int = DEFAULT_BINS,
    alpha: float | None = DEFAULT_ALPHA,
) -> dict[str, Any]:
    """All five AR-VAE metrics, with per-attribute detail, as a JSON-ready dict.

    The MI matrix is computed once and shared by interpretability, MIG and modularity.
    Unlike the single-metric functions, an attribute that is constant over the samples
    (e.g. infarct volume on a split of normal cases) does not raise: it is left out of
    every metric, its per-attribute entries are ``None`` and its index is listed under
    ``"constant_attributes"``. If every attribute is constant, all metrics are ``None``.

    Args:
        latents: (N, D) codes.
        attributes: (N, A) attribute values.
        attribute_dims: (A,) latent index per attribute for interpretability and SCC
            (``None``: AR-VAE's argmax choice).
        bins: equal-frequency bins per variable for MI.
        alpha: SCC significance level (``None``: keep every ρ).
    Returns:
        ``{"interpretability", "mig", "sap", "scc", "modularity"}`` as floats (``mig``/``sap``
        are ``None`` when D < 2, ``modularity`` when fewer than 2 attributes vary),
        ``"<name>_per_attribute"`` lists of length A, ``"interpretability_dims"`` and
        ``"scc_dims"`` (the dimension used per attribute), ``"constant_attributes"``, and the
        settings ``n_samples``, ``n_latents``, ``n_attributes``, ``bins``, ``alpha``,
        ``attribute_dims``.
    """
    z = _as_matrix(latents, "latents")
    a_all = _as_matrix(attributes, "attributes")
    if z.shape[0] != a_all.shape[0]:
        raise ValueError(f"latents and attributes must have the same N, got {z.shape[0]} and {a_all.shape[0]}")
    n_attr = a_all.shape[1]
    bins = _check_bins(bins)
    alpha = _check_alpha(alpha)
    dims_all = _check_attribute_dims(attribute_dims, z.shape[1], n_attr)
    varying = [j for j in range(n_attr) if np.ptp(a_all[:, j]) > 0]
    out: dict[str, Any] = {name: None for name in ("interpretability", "scc", "mig", "sap", "modularity")}
    for name in ("interpretability_per_attribute", "interpretability_dims", "scc_per_attribute", "scc_dims",
                 "mig_per_attribute", "sap_per_attribute"):
        out[name] = [None] * n_attr

    def scatter(name: str, values: np.ndarray) -> None:
        for j, value in zip(varying, values.tolist()):
            out[name][j] = value

    if varying:
        z, a = _check_inputs(z, a_all[:, varying])
        dims = None if dims_all is None else dims_all[varying]
        mi = _mi_matrix(z, a, bins)
        interp, interp_dims = _interpretability_scores(z, a, dims, mi)
        scc_scores, scc_dims = _scc_scores(z, a, dims, alpha)
        out["interpretability"], out["scc"] = float(interp.mean()), float(scc_scores.mean())
        scatter("interpretability_per_attribute", interp)
        scatter("interpretability_dims", interp_dims)
        scatter("scc_per_attribute", scc_scores)
        scatter("scc_dims", scc_dims)
        if z.shape[1] >= 2:
            entropies = np.array([_entropy(discretize(a[:, j], bins)) for j in range(a.shape[1])])
            mig_scores, sap_scores = _mig_scores(mi, entropies), _sap_scores(z, a)
            out["mig"], out["sap"] = float(mig_scores.mean()), float(sap_scores.mean())
            scatter("mig_per_attribute", mig_scores)
            scatter("sap_per_attribute", sap_scores)
        if len(varying) >= 2:
            out["modularity"] = float(_modularity_scores(mi).mean())
    out.update(
        constant_attributes=[j for j in range(n_attr) if j not in varying],
        n_samples=int(z.shape[0]),
        n_latents=int(z.shape[1]),
        n_attributes=int(n_attr),
        bins=bins,
        alpha=alpha,
        attribute_dims=None if dims_all is None else dims_all.tolist(),
    )
    return out
