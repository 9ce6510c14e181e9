"""What an edit of a run needs from its training split: atom bounds, prototype code maps, the
feedback rule's attribute units (A.5), and the rule used unless told otherwise.

Used by ``verify-edits`` and ``interpret-all`` (through :mod:`attri_ssc.reports.interpretation`);
the edit itself happens in :mod:`attri_ssc.interpret.editing`. ``attri-ssc edit`` and the Python
API use the same statistics as saved in the run folder (:mod:`attri_ssc.interpret.statistics`,
whose :func:`~attri_ssc.interpret.statistics.calibrate_units` :func:`attribute_units` calls).
"""

from __future__ import annotations

from attri_ssc.errors import ConfigError
from attri_ssc.interpret.editing import (
    AttributeUnits,
    collect_codes,
    hold_fixed_indices,
    prototypes_from_codes,
    run_atom_bounds,
)

__all__ = ["DEFAULT_RULE", "resolve_top_k", "bounds_and_prototypes", "attribute_units"]

#: What ``edit`` (and the report's edit strips) use unless told otherwise; chosen by the edit
#: verification (README "Editing"): on the area models the best rule for both cavity and myocardium.
DEFAULT_RULE = "feedback"


def resolve_top_k(run, top_k: int | None) -> int:
    """Atoms to edit: ``top_k`` or the run's ``train.top_k``; ConfigError unless >= 1."""
    k = run.config.train.top_k if top_k is None else top_k
    if k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {k}")
    return k


def bounds_and_prototypes(run, bundle, percentile: float, quantile: float | None, codes=None):
    """The run's atom bounds and, unless ``quantile`` is None, the plain and the conditional
    (hold-fixed) prototype code maps, encoding the training split at most once (not at all when
    ``codes``, the training codes, are given)."""
    train = bundle.train
    if codes is None and quantile is not None:
        codes = collect_codes(run.model.backbone, train.images)
    bounds = run_atom_bounds(run, train.images, train.case_ids, percentile, codes=codes)
    if quantile is None:
        return bounds, None, None
    plain = prototypes_from_codes(codes, train.attributes, quantile)
    conditional = prototypes_from_codes(codes, train.attributes, quantile, hold_fixed_indices(run.attribute_names))
    return bounds, plain, conditional


def attribute_units(run, bundle, codes=None) -> AttributeUnits:
    """The ``feedback`` rule's :class:`AttributeUnits` for ``run`` on ``bundle``'s training split:
    :func:`attri_ssc.interpret.statistics.calibrate_units` (which explains the calibration) on
    the training codes.

    Args:
        codes: the training images' codes (N, K, *s) if already computed.
    """
    from attri_ssc.interpret.statistics import calibrate_units

    train = bundle.train
    z = collect_codes(run.model.backbone, train.images) if codes is None else codes
    return calibrate_units(run.model.mapper, z, train.raw_attributes)
