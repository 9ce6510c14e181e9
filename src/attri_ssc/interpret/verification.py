"""Does an edit change the attribute it claims to, and little else? (beyond the paper)

Each held-out image is edited along the α grid (A.5; :mod:`editing`), every decoded edit is
measured by the model-free judge (:mod:`judge`: cavity and myocardium, as areas or slice
volumes, and wall thickness from intensities alone), and two numbers are reported per edited attribute:

* **monotonicity**: Spearman ρ between α and the judged target attribute, per image
  (an image whose judged value does not change at all scores 0), averaged over images;
  the pooled ρ of (judged − judged at α = 0) against α over all images is reported too.
* **leakage**: how much the *other* judged attributes move relative to the target, in
  units of each attribute's training-set standard deviation. Per image the judged
  response to α is summarised by its least-squares slope; leakage onto attribute m is
  mean|slope_m / σ_m| / mean|slope_a / σ_a| over images. The three judged quantities of an
  annulus have only two degrees of freedom (cavity radius r and wall thickness t: cavity
  area πr², myocardial area π((r + t)² − r²)), so an edit can hold at most one of the others
  fixed and the third must move. The headline ``leakage`` therefore counts only the
  attribute that should stay put (:data:`HEADLINE_OTHERS`): the myocardium for a
  cavity edit, the cavity for a myocardium or wall-thickness edit.
  ``leakage_all`` is the largest over every other judged attribute.

The judge measures cavity and myocardium both as in-plane areas (``lv_area``, ``myo_area``)
and as slice volumes (``lv_volume``, ``myo_volume``: the area times the slice thickness);
a run is judged on the form it supervises (:func:`judged_names`), so an area edit is never
counted as leaking onto its own volume.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from scipy import stats

from attri_ssc.interpret.editing import (HOLD_FIXED, PROTOTYPE_RULES, AtomBounds, AttributePrototypes, AttributeUnits,
                                          FeedbackSettings, alpha_grid, collect_codes, edit_codes, feedback_hold,
                                          feedback_steps, select_atoms)
from attri_ssc.interpret.judge import measure_batch
from attri_ssc.interpret.sampling import decode_samples
from attri_ssc.seeding import fixed_threads

#: Attributes the judge measures (its field names equal the dataset's attribute names).
JUDGED: tuple[str, ...] = ("lv_volume", "myo_volume", "lv_area", "myo_area", "wall_thickness")
#: The judged quantities, each with its interchangeable forms (first: the default).
_QUANTITIES: tuple[tuple[str, ...], ...] = (("lv_area", "lv_volume"), ("myo_area", "myo_volume"), ("wall_thickness",))


def judged_names(attribute_names: Sequence[str]) -> tuple[str, ...]:
    """One judged form of each quantity (cavity, myocardium, wall thickness): the form among
    ``attribute_names`` (the run's supervised attributes), else the area."""
    names = set(attribute_names)
    return tuple(next((f for f in forms if f in names), forms[0]) for forms in _QUANTITIES)


#: For each edited attribute, the judged attributes that should not move (headline leakage):
#: the same map that conditional prototypes hold fixed.
HEADLINE_OTHERS: dict[str, tuple[str, ...]] = dict(HOLD_FIXED)


@dataclass(frozen=True)
class EditVariant:
    """How edits are made: the rule (``feedback``/``prototype``/``shift``/``magnitude``/``literal``), whether only active
    locations move, whether atoms shared with other attributes are left out, and whether the prototypes
    are conditional (the attributes in :data:`HEADLINE_OTHERS` regressed out; see :mod:`editing`)."""

    rule: str = "magnitude"
    active_only: bool = False
    exclusive: bool = False
    conditional: bool = False

    @property
    def name(self) -> str:
        return (self.rule + ("+conditional" if self.conditional else "") + ("+active_only" if self.active_only else "")
                + ("+exclusive" if self.exclusive else ""))


#: CPU threads of :func:`verify_edits` (module-level so that a test or a GPU user can see it).
VERIFY_THREADS = 1

#: The variants verified by default (the prototype-based ones only when their prototypes are given).
VARIANTS: tuple[EditVariant, ...] = (
    EditVariant("feedback"),
    EditVariant("shift", conditional=True),
    EditVariant("shift"),
    EditVariant("prototype", conditional=True),
    EditVariant("prototype"),
    EditVariant("prototype", active_only=True),
    EditVariant("magnitude"),
    EditVariant("magnitude", active_only=True),
    EditVariant("magnitude", exclusive=True),
    EditVariant("literal"),
)


@dataclass(frozen=True)
class HeldOut:
    """Held-out images to edit, with what the judge needs.

    Attributes:
        images: (N, 1, H, W) in [0, 1].
        slice_thickness_mm: (N,) each image's slice thickness (turns areas into mL).
        case_ids, slice_index: provenance of each image.
    """

    images: torch.Tensor
    slice_thickness_mm: np.ndarray
    case_ids: Sequence[str]
    slice_index: Sequence[int]


def held_out_images(dataset, cases: dict, spacing_mm: float, n_images: int) -> tuple[HeldOut, dict[str, float]]:
    """Pick up to ``n_images`` items of a 2D dataset that the judge can measure, spread evenly
    over the dataset, and the judge's spread of each attribute on them.

    Args:
        dataset: a 2D :class:`CardiacDataset` (items are slices).
        cases: case id → :class:`EmidecCase` (for the slice thickness ``spacing[2]``).
        spacing_mm: pixel spacing of the preprocessed images.
        n_images: how many to keep (>= 2).
    Returns:
        (:class:`HeldOut`, scale): scale maps each of :data:`JUDGED` to the standard deviation of
        the judge's measurements of the unedited inputs (the unit in which leakage is measured).
    """
    if n_images < 2:
        raise ValueError(f"n_images must be >= 2, got n_images={n_images}")
    thick = np.array([float(cases[c].spacing[2]) for c in dataset.case_ids])
    got = measure_batch(dataset.images, spacing_mm, thick)
    valid = np.flatnonzero(got["valid"] > 0)
    if valid.size < 2:
        raise ValueError(f"the judge can measure only {valid.size} of {len(dataset)} held-out images")
    keep = valid[np.unique(np.linspace(0, valid.size - 1, min(n_images, valid.size)).round().astype(int))]
    scale = {}
    for name in JUDGED:
        sd = float(np.std(got[name][valid]))
        scale[name] = sd if sd > 0 else 1.0
    held = HeldOut(images=dataset.images[keep], slice_thickness_mm=thick[keep],
                   case_ids=[dataset.case_ids[i] for i in keep], slice_index=[dataset.slice_indices[i] for i in keep])
    return held, scale


def _slope(alphas: np.ndarray, values: np.ndarray) -> float:
    ok = np.isfinite(values)
    if ok.sum() < 2:
        return float("nan")
    a, v = alphas[ok], values[ok]
    a = a - a.mean()
    return float((a * (v - v.mean())).sum() / (a * a).sum())


def _spearman(alphas: np.ndarray, values: np.ndarray) -> float:
    ok = np.isfinite(values)
    if ok.sum() < 3:
        return float("nan")
    if np.ptp(values[ok]) == 0:
        return 0.0
    return float(stats.spearmanr(alphas[ok], values[ok]).statistic)


def _nanmean(x: Sequence[float]) -> float | None:
    arr = np.asarray(x, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else None


def judged_responses(model, held_out: HeldOut, attribute: int, bounds: AtomBounds, alphas: torch.Tensor,
                     spacing_mm: float, top_k: int, variant: EditVariant,
                     codes: torch.Tensor | None = None, batch_size: int = 32,
                     prototypes: AttributePrototypes | None = None,
                     judged: Sequence[str] = JUDGED,
                     feedback: tuple[Sequence[int], AttributeUnits, FeedbackSettings] | None = None
                     ) -> dict[str, np.ndarray]:
    """Judge every edit of every held-out image (all NaN when the variant leaves no atom to edit).

    Args:
        codes: the held-out images' codes (N, K, *s) if already computed (else encoded here).
        prototypes: the code maps of the ``prototype`` and ``shift`` rules (required by them).
        judged: which of :data:`JUDGED` to return.
        feedback: the ``feedback`` rule's (held attribute indices, :class:`AttributeUnits`,
            settings), as for :func:`attri_ssc.interpret.editing.feedback_steps` (required by it).
    Returns:
        name → (N, n_alpha) judged values (NaN where the judge fails) for each of
        ``judged``, plus ``predicted`` (N, n_alpha) the model's own â of the target
        (scaled units).
    """
    selection = select_atoms(model.mapper.effective_weight(), attribute, top_k, variant.exclusive)
    n, m = held_out.images.shape[0], alphas.shape[0]
    out = {name: np.full((n, m), np.nan) for name in judged}
    out["predicted"] = np.full((n, m), np.nan)
    if not selection.atoms:
        return out
    z = collect_codes(model.backbone, held_out.images, batch_size) if codes is None else codes
    steps = None
    if variant.rule == "feedback":
        if feedback is None:
            raise ValueError("the feedback rule needs (hold, units, settings)")
        steps = feedback_steps(model, z, selection, feedback[0], feedback[1], feedback[2], batch_size)
    for k, a in enumerate(alphas.tolist()):
        edited = edit_codes(z, selection, bounds, a, variant.rule, variant.active_only, prototypes, steps)
        images = decode_samples(model.backbone, edited, batch_size)  # clamped to [0, 1]
        got = measure_batch(images, spacing_mm, held_out.slice_thickness_mm)
        for name in judged:
            out[name][:, k] = np.where(got["valid"] > 0, got[name], np.nan)
        with torch.no_grad():
            device = next(model.parameters()).device
            out["predicted"][:, k] = model.mapper(edited.to(device))[:, attribute].cpu().numpy()
    return out


def atom_effects(model, held_out: HeldOut, atoms: Sequence[int], spacing_mm: float, scale: dict[str, float],
                 codes: torch.Tensor | None = None, batch_size: int = 32,
                 judged: Sequence[str] = JUDGED) -> dict[int, dict[str, float | None]]:
    """Causal probe of single atoms: the judged change when an atom's codes are doubled
    rather than zeroed, averaged over the held-out images, in units of ``scale``.

    It asks whether the decoder actually draws an attribute with the atoms W credits with it
    (W is fitted to usages, which correlate with the attribute without having to cause it).

    Returns:
        atom → {judged attribute: mean change (doubled − zeroed) / scale, or None}.
    """
    z = collect_codes(model.backbone, held_out.images, batch_size) if codes is None else codes
    out: dict[int, dict[str, float | None]] = {}
    for j in atoms:
        got = []
        for factor in (0.0, 2.0):
            zz = z.clone()
            zz[:, int(j)] *= factor
            got.append(measure_batch(decode_samples(model.backbone, zz, batch_size), spacing_mm,
                                        held_out.slice_thickness_mm))
        out[int(j)] = {name: _nanmean((got[1][name] - got[0][name]) / scale[name]) for name in judged}
    return out


def summarise(responses: dict[str, np.ndarray], alphas: np.ndarray, target: str,
              scale: dict[str, float]) -> dict[str, Any]:
    """Monotonicity and leakage (module doc) from :func:`judged_responses`' arrays (leakage onto
    every judged attribute in ``responses``)."""
    judged = [name for name in JUDGED if name in responses]
    tgt = responses[target]
    centre = int(np.argmin(np.abs(alphas)))
    rho = [_spearman(alphas, row) for row in tgt]
    finite = np.asarray([r for r in rho if math.isfinite(r)])
    rel = tgt - tgt[:, centre:centre + 1]
    ok = np.isfinite(rel)
    pooled = _spearman(np.broadcast_to(alphas, rel.shape)[ok], rel[ok]) if ok.sum() >= 3 else None
    slopes = {name: np.array([_slope(alphas, row) for row in responses[name]]) / scale[name] for name in judged}
    denom = _nanmean(np.abs(slopes[target]))
    leak: dict[str, float | None] = {}
    for name in judged:
        if name == target:
            continue
        num = _nanmean(np.abs(slopes[name]))
        leak[name] = None if num is None or not denom else num / denom
    headline = [v for k, v in leak.items() if v is not None and k in HEADLINE_OTHERS.get(target, ())]
    every = [v for v in leak.values() if v is not None]
    target_change = _nanmean(slopes[target] * 2 * scale[target])
    return {
        "monotonicity": _nanmean(rho),
        "monotonicity_median": float(np.nanmedian(rho)) if np.isfinite(rho).any() else None,
        "monotonicity_pooled": pooled,
        "fraction_rho_ge_0.9": float(np.mean(finite >= 0.9)) if finite.size else None,
        "leakage": max(headline) if headline else None,
        "leakage_all": max(every) if every else None,
        "leakage_by_attribute": leak,
        "target_change_per_unit_alpha_range": target_change,
        "judged_valid_fraction": float(np.isfinite(tgt).mean()),
        "predicted_spearman": _nanmean([_spearman(alphas, row) for row in responses["predicted"]]),
        "per_image_monotonicity": [None if not math.isfinite(r) else r for r in rho],
    }


def verify_edits(model, held_out: HeldOut, attribute_names: Sequence[str], bounds: AtomBounds, spacing_mm: float,
                 scale: dict[str, float], top_k: int, steps: int = 9,
                 variants: Sequence[EditVariant] = VARIANTS,
                 attributes: Sequence[str] | None = None,
                 prototypes: AttributePrototypes | None = None,
                 conditional_prototypes: AttributePrototypes | None = None,
                 attribute_units: AttributeUnits | None = None,
                 feedback_settings: FeedbackSettings = FeedbackSettings(), jobs: int = 1) -> dict[str, Any]:
    """Verify edits of every judged attribute under each (rule, active_only) variant.

    Args:
        model: an ``AttriSSCVAE``.
        held_out: images to edit (:class:`HeldOut`).
        attribute_names: the model's attributes, in W's row order.
        bounds: the run's :class:`AtomBounds`.
        spacing_mm: pixel spacing of the images.
        scale: name → a positive spread (e.g. training-set std) for each of :func:`judged_names`.
        top_k: atoms edited per attribute.
        steps: α grid size (odd).
        variants: the :class:`EditVariant` s to verify.
        attributes: which attributes to edit (default: every judged one the model supervises).
            Edited images are measured on :func:`judged_names` of the model's attributes.
        prototypes: code maps for the ``prototype`` and ``shift`` rules; without them their plain
            variants are skipped.
        conditional_prototypes: the same with :data:`HEADLINE_OTHERS` regressed out (for the
            ``conditional`` variants; skipped without them).
        attribute_units: the mapper's :class:`AttributeUnits`, for the ``feedback`` rule (skipped
            without them).
        feedback_settings: how the ``feedback`` rule searches its steps.
        jobs: worker processes; with more than one, the attributes are verified side by side, one
            per worker (CPU models only), and the reports merged.
    Returns:
        JSON-ready dict: settings and ``results[variant][attribute]`` from :func:`summarise`.

    Runs with :data:`VERIFY_THREADS` CPU threads per process, so its numbers do not depend on the
    caller's thread setting (the ``feedback`` search amplifies last-bit differences; see
    :data:`attri_ssc.interpret.editing.SEARCH_THREADS`), nor on ``jobs``: each attribute's numbers
    are computed alone, from the same inputs, in whichever process.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got jobs={jobs!r}")
    inputs = dict(model=model, held_out=held_out, attribute_names=list(attribute_names), bounds=bounds,
                  spacing_mm=spacing_mm, scale=scale, top_k=top_k, steps=steps, variants=list(variants),
                  prototypes=prototypes, conditional_prototypes=conditional_prototypes,
                  attribute_units=attribute_units, feedback_settings=feedback_settings)
    wanted = _wanted(attribute_names, attributes)
    device = next(model.parameters()).device
    if jobs == 1 or len(wanted) == 1 or device.type != "cpu":
        return _verify_part({**inputs, "attributes": wanted})
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a forked child inherits the parent's OpenMP state, which can hang its first parallel region
    with ProcessPoolExecutor(max_workers=min(jobs, len(wanted)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_verify_part, [{**inputs, "attributes": [a]} for a in wanted]))
    return merge_verifications(parts)


def _wanted(attribute_names: Sequence[str], attributes: Sequence[str] | None) -> list[str]:
    """The attributes to verify: ``attributes`` (default: every judged one) that the run supervises."""
    names = list(attribute_names)
    judged = judged_names(names)
    wanted = [a for a in (attributes or judged) if a in names and a in judged]
    if not wanted:
        raise ValueError(f"no judged attribute among {names}; the judge measures {list(judged)}")
    return wanted


def _verify_part(inputs: dict[str, Any]) -> dict[str, Any]:
    """:func:`verify_edits` in this process, on one thread (a worker's task when ``jobs`` > 1)."""
    with fixed_threads(VERIFY_THREADS):
        return _verify_edits(**inputs)


def merge_verifications(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report from :func:`verify_edits` reports of the same images and settings that verified
    different attributes, in the order given (what one call over all of them returns)."""
    if not parts:
        raise ValueError("no reports to merge")
    merged = dict(parts[0])
    shared = [k for k in merged if k not in ("results", "atom_effects", "feedback")]
    for part in parts[1:]:
        differ = [k for k in shared if part.get(k) != merged[k]]
        if differ or set(part["results"]) != set(merged["results"]):
            raise ValueError(f"reports of different images or settings cannot be merged (they differ in {differ or 'variants'})")
    merged["results"] = {v: {a: r for part in parts for a, r in part["results"][v].items()} for v in merged["results"]}
    merged["atom_effects"] = {a: e for part in parts for a, e in part["atom_effects"].items()}
    if merged.get("feedback") is not None:
        merged["feedback"] = {**merged["feedback"],
                              "holds": {a: h for part in parts for a, h in part["feedback"]["holds"].items()}}
    return merged


def _verify_edits(model, held_out: HeldOut, attribute_names: Sequence[str], bounds: AtomBounds, spacing_mm: float,
                  scale: dict[str, float], top_k: int, steps: int, variants: Sequence[EditVariant],
                  attributes: Sequence[str] | None, prototypes: AttributePrototypes | None,
                  conditional_prototypes: AttributePrototypes | None, attribute_units: AttributeUnits | None,
                  feedback_settings: FeedbackSettings) -> dict[str, Any]:
    names = list(attribute_names)
    judged = judged_names(names)
    wanted = _wanted(names, attributes)
    alphas = alpha_grid(steps)
    codes = collect_codes(model.backbone, held_out.images)
    results: dict[str, Any] = {}
    for variant in variants:
        maps = conditional_prototypes if variant.conditional else prototypes
        if (variant.rule in PROTOTYPE_RULES and maps is None) or (variant.rule == "feedback" and attribute_units is None):
            continue
        per_attr = {}
        for target in wanted:
            m = names.index(target)
            loop = ((feedback_hold(names, m), attribute_units, feedback_settings) if attribute_units is not None
                    else None)
            responses = judged_responses(model, held_out, m, bounds, alphas, spacing_mm, top_k,
                                         variant, codes=codes, prototypes=maps, judged=judged, feedback=loop)
            per_attr[target] = summarise(responses, alphas.numpy().astype(np.float64), target, scale)
            per_attr[target]["atoms"] = list(select_atoms(model.mapper.effective_weight(), names.index(target),
                                                          top_k, variant.exclusive).atoms)
        results[variant.name] = per_attr
    weight = model.mapper.effective_weight().detach().cpu()
    edited_atoms = {t: list(select_atoms(weight, names.index(t), top_k).atoms) for t in wanted}
    effects = atom_effects(model, held_out, sorted({j for v in edited_atoms.values() for j in v}), spacing_mm,
                           scale, codes=codes, judged=judged)
    return {
        "n_images": int(held_out.images.shape[0]),
        "cases": sorted(set(held_out.case_ids)),
        "alphas": [float(a) for a in alphas],
        "top_k": int(top_k),
        "bounds_percentile": bounds.percentile,
        "prototype_quantile": None if prototypes is None else prototypes.quantile,
        "feedback": None if attribute_units is None else {
            **asdict(feedback_settings),
            "holds": {t: [names[o] for o in feedback_hold(names, names.index(t))] for t in wanted}},
        # training images averaged into the (high, low) prototype of each attribute: ties (e.g. the many
        # zero infarct volumes) make a group larger than (1 − q)·N
        "prototype_counts": None if prototypes is None else {
            name: [int(c) for c in prototypes.counts[i]] for i, name in enumerate(names)},
        "conditional_prototype_counts": None if conditional_prototypes is None else {
            name: [int(c) for c in conditional_prototypes.counts[i]] for i, name in enumerate(names)},
        "conditional_prototypes_hold_fixed": None if conditional_prototypes is None else {
            names[m]: [names[o] for o in others] for m, others in conditional_prototypes.conditioned_on.items()},
        "scale": {k: float(v) for k, v in scale.items()},
        "judged": list(judged),
        "headline_leakage_onto": {k: [o for o in v if o in judged] for k, v in HEADLINE_OTHERS.items() if k in judged},
        "results": results,
        "atom_effects": {t: {str(j): {"weight": float(weight[names.index(t), j]), **effects[j]} for j in atoms}
                         for t, atoms in edited_atoms.items()},
    }


def verification_markdown(report: dict[str, Any], targets: dict[str, float] | None = None) -> str:
    """A Markdown table of :func:`verify_edits`' output (one row per variant and attribute)."""
    lines = [
        "# Edit verification (independent judge)",
        "",
        f"{report['n_images']} held-out images from {len(report['cases'])} cases; α grid of "
        f"{len(report['alphas'])} values in [−1, 1]; top-{report['top_k']} atoms; bounds at the "
        f"{report['bounds_percentile']:g}th percentile"
        + (f"; prototypes from the training images beyond the {report['prototype_quantile']:g} quantiles"
           if report.get("prototype_quantile") else "") + ". Rules: `feedback` Z' = Z + |α|Δ± (Δ± on the same "
        "atoms, searched per image so that the decoded edit, encoded again, reads the attribute "
        + (f"{report['feedback']['goal_sd']:g} " if report.get("feedback") else "")
        + "training spreads higher or lower with the held attributes unchanged), `prototype` Z' = (1 − |α|)Z + |α|B (B the "
        "mean training code map at the attribute's high or low end), `shift` Z' = Z + α(B_high − B_low)/2, "
        "`+conditional`: the ends chosen by the attribute's residual after regressing out the attributes the "
        "edit should hold fixed (the headline leakage's), `magnitude`/`literal`: scalar per-atom bounds.",
        "Monotonicity: mean per-image Spearman ρ(α, judged attribute). Leakage: mean |slope| of another "
        "judged attribute over the target's, in units of each one's spread over the held-out inputs; the "
        "headline counts the attribute that should stay put ("
        + "; ".join(f"{k} → {', '.join(v)}" for k, v in report["headline_leakage_onto"].items())
        + "), 'all' the largest over every other judged attribute (an annulus has two degrees of freedom, "
        "so the third must move).",
        "",
        "| rule | edited attribute | monotonicity | median ρ | pooled ρ | leakage | leakage (all) | "
        "judged change (α −1→1) | model's own ρ(α, â) | atoms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(v: Any, nd: int = 3) -> str:
        return "n/a" if v is None else f"{v:.{nd}f}"

    for variant, per_attr in report["results"].items():
        for attr, r in per_attr.items():
            lines.append(
                f"| {variant} | {attr} | {fmt(r['monotonicity'])} | {fmt(r['monotonicity_median'])} | "
                f"{fmt(r['monotonicity_pooled'])} | {fmt(r['leakage'])} | {fmt(r['leakage_all'])} | "
                f"{fmt(r['target_change_per_unit_alpha_range'])} | {fmt(r['predicted_spearman'])} | "
                f"{', '.join(str(a) for a in r['atoms'])} |")
    if targets:
        lines += ["", "Targets: " + ", ".join(f"{k} {v}" for k, v in targets.items())]
    effects = report.get("atom_effects") or {}
    if effects:
        judged = report.get("judged") or list(JUDGED)
        lines += ["", "## Do the edited atoms draw the attribute? (causal probe)", "",
                  "Judged change when one atom's codes are doubled rather than zeroed, mean over the images, in "
                  "spread units. W's sign says which way the atom should move its attribute.", "",
                  "| edited attribute | atom | W | " + " | ".join(f"Δ {n}" for n in judged) + " |",
                  "|---|---|---|" + "---|" * len(judged)]
        for attr, atoms in effects.items():
            for j, e in atoms.items():
                lines.append(f"| {attr} | {j} | {e['weight']:+.3f} | " + " | ".join(fmt(e[n], 2) for n in judged) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["HEADLINE_OTHERS", "EditVariant", "HeldOut", "JUDGED", "VARIANTS", "atom_effects", "held_out_images",
           "judged_names", "judged_responses", "merge_verifications", "summarise", "verification_markdown",
           "verify_edits"]
