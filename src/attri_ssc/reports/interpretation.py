"""A run's interpretation outputs (Section 4.2): compute with :mod:`attri_ssc.interpret`, draw
with :mod:`attri_ssc.reports.figures`, write PNG + JSON + Markdown.

One function per output, each taking a loaded run and its data
(:func:`attri_ssc.runs.load_run_and_data`), plus :func:`interpret_all`, which writes every
figure of a run and the index ``interpret.json`` that :func:`attri_ssc.reports.report.build_report`
reads. The ``attri-ssc`` commands ``interpolate``, ``edit``, ``correlations``,
``verify-edits``, ``sample`` and ``interpret-all`` call these and print what they return.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from attri_ssc.errors import ConfigError, DataError
from attri_ssc.io_utils import read_json, write_json, write_text
from attri_ssc.runs import attribute_index, item_label, load_run_and_data, resolve_item, split_dataset

__all__ = [
    "write_interpolation",
    "write_edit",
    "write_correlations",
    "write_verification",
    "write_samples",
    "interpret_all",
]


def write_interpolation(run, bundle, case_a: str, case_b: str, steps: int, out: Path) -> str:
    """Eq. 16 between two items' codes → ``out`` (PNG); returns a one-line summary."""
    from attri_ssc.interpret.interpolation import interpolate
    from attri_ssc.reports.figures import interpolation_grid

    ds_a, ia = resolve_item(bundle, case_a)
    ds_b, ib = resolve_item(bundle, case_b)
    result = interpolate(run.model.backbone, ds_a[ia]["image"], ds_b[ib]["image"], steps=steps)
    interpolation_grid(result.images.clamp(0, 1), result.alphas.tolist(), out,
                       title=f"{item_label(ds_a, ia)} → {item_label(ds_b, ib)} (Eq. 16)",
                       inputs=(ds_a[ia]["image"], ds_b[ib]["image"]))
    return f"interpolation {item_label(ds_a, ia)} → {item_label(ds_b, ib)} in {steps} steps → {out}"


def write_edit(run, bundle, case: str, attribute: str, out: Path, *, rule: str, alphas,
               quantile: float = 0.9, hold_fixed: bool | None = None, active_only: bool = False,
               exclusive: bool = False, top_k: int | None = None, percentile: float = 99.0) -> str:
    """A.5's edit strip with saliency (Figure 3) of one attribute of one item → ``out`` (PNG).

    Args:
        alphas: ``(S,)`` edit strengths in [-1, 1] (:func:`~attri_ssc.interpret.editing.alpha_grid`).
        hold_fixed: prototype/shift rules; ``None``: on for ``shift``, off otherwise.
    Returns:
        A one-line summary.
    """
    from attri_ssc.interpret.edit_references import attribute_units, bounds_and_prototypes, resolve_top_k
    from attri_ssc.interpret.editing import (PROTOTYPE_RULES, FeedbackSettings, collect_codes, edit_sweep,
                                              feedback_hold, select_atoms)
    from attri_ssc.reports.figures import edit_strip

    a = attribute_index(run, attribute)
    ds, i = resolve_item(bundle, case)
    train_codes = collect_codes(run.model.backbone, bundle.train.images)  # bounds, prototypes and units
    bounds, plain, conditional = bounds_and_prototypes(run, bundle, percentile,
                                                       quantile if rule in PROTOTYPE_RULES else None, train_codes)
    hold_fixed = hold_fixed if hold_fixed is not None else rule == "shift"
    prototypes = conditional if hold_fixed else plain
    selection = select_atoms(run.model.mapper.effective_weight(), a, resolve_top_k(run, top_k), exclusive)
    if not selection.atoms:
        raise ConfigError(f"attribute {attribute!r} has no atom to edit (non-zero in W"
                          f"{', used by no other attribute' if exclusive else ''})")
    units = attribute_units(run, bundle, train_codes)
    loop = (feedback_hold(run.attribute_names, a), units, FeedbackSettings()) if rule == "feedback" else None
    sweep = edit_sweep(run.model, ds[i]["image"], selection, bounds, alphas, rule, active_only,
                       prototypes=prototypes, feedback=loop)
    # â ranks the attribute but is not on its scale: report it through the training calibration
    pred = units.physical(sweep.predicted.double())[:, a]
    held_names = ([run.attribute_names[o] for o in loop[0]] if loop is not None
                  else [run.attribute_names[o] for o in prototypes.conditioned_on[a]]
                  if prototypes is not None and hold_fixed and a in prototypes.conditioned_on else [])
    described = (rule + (", holding " + ", ".join(held_names) + " fixed" if held_names else "")
                 + (" (active only)" if active_only else "") + (" (exclusive atoms)" if exclusive else ""))
    edit_strip(ds[i]["image"], sweep.images, alphas.tolist(), out, saliency=sweep.saliency,
               title=f"{item_label(ds, i)}: {attribute} edited via atoms {list(selection.atoms)} ({described}); "
                     f"model's reading (calibrated â) {float(pred[0]):.3g} → {float(pred[-1]):.3g}")
    return (f"edited {attribute} of {item_label(ds, i)} via atoms {list(selection.atoms)} "
            f"(signs {[int(s) for s in selection.signs]}, rule {described}) → {out}")


def write_correlations(run, bundle, split: str, out: Path) -> str:
    """Table 3 → ``out/correlations.{json,md}`` and ``out/w_heatmap.png``; returns the Markdown."""
    from attri_ssc.evaluation.predict import predict
    from attri_ssc.interpret.correlations import correlation_analysis, correlations_markdown
    from attri_ssc.reports.figures import weight_heatmap

    ds = split_dataset(bundle, split)
    pred = predict(run, ds)
    weight = run.model.mapper.effective_weight().detach().cpu().numpy()
    predicted = bundle.scaler.inverse_transform(pred.attributes.double().numpy())
    result = correlation_analysis(pred.raw_attributes.numpy(), predicted, run.attribute_names, weight,
                                  pred.case_ids)
    result["split"] = split
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "correlations.json", result)
    markdown = correlations_markdown(result)
    write_text(out / "correlations.md", markdown)
    weight_heatmap(weight, run.attribute_names, out / "w_heatmap.png")
    return markdown


def write_verification(run, bundle, out: Path, *, split: str = "test", n_images: int = 24, steps: int = 9,
                       top_k: int | None = None, percentile: float = 99.0, quantile: float = 0.9,
                       variants: Sequence | None = None, run_label: str = "", feedback_settings=None,
                       jobs: int = 1) -> str:
    """Edit verification by the model-free judge → ``out/edit_verification.{json,md}``.

    Args:
        variants: :class:`~attri_ssc.interpret.verification.EditVariant` s to verify (default: the
            default rule, :data:`~attri_ssc.interpret.edit_rules.DEFAULT_VARIANTS`).
        feedback_settings: the ``feedback`` rule's search
            (:class:`~attri_ssc.interpret.editing.FeedbackSettings`; None: its defaults).
        jobs: processes verifying attributes side by side (the numbers do not depend on it).
    Returns:
        The Markdown table.
    """
    from attri_ssc.interpret.edit_references import attribute_units, bounds_and_prototypes, resolve_top_k
    from attri_ssc.interpret.editing import FeedbackSettings, collect_codes
    from attri_ssc.interpret.edit_rules import DEFAULT_VARIANTS, EDIT_TARGETS
    from attri_ssc.interpret.verification import held_out_images, verification_markdown, verify_edits

    spacing = float(run.config.data.spacing_mm)
    try:
        held_out, scale = held_out_images(split_dataset(bundle, split), bundle.cases, spacing, n_images)
    except ValueError as exc:
        raise DataError(f"{split} split: {exc}") from None
    train_codes = collect_codes(run.model.backbone, bundle.train.images)
    bounds, plain, conditional = bounds_and_prototypes(run, bundle, percentile, quantile, train_codes)
    try:
        report = verify_edits(run.model, held_out, run.attribute_names, bounds, spacing, scale,
                              resolve_top_k(run, top_k), steps=steps, prototypes=plain,
                              variants=list(variants) if variants is not None else list(DEFAULT_VARIANTS),
                              conditional_prototypes=conditional,
                              attribute_units=attribute_units(run, bundle, train_codes),
                              feedback_settings=feedback_settings or FeedbackSettings(), jobs=jobs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    report["run"] = run_label or str(run.run_dir)
    report["split"] = split
    edited = [n for n in report.get("judged", []) if n not in ("wall_thickness",)]
    targets = {f"monotonicity ({', '.join(edited)})": f">= {EDIT_TARGETS['monotonicity']:g}",
               "leakage": f"<= {EDIT_TARGETS['leakage']:g}"}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "edit_verification.json", report)
    markdown = verification_markdown(report, targets)
    write_text(out / "edit_verification.md", markdown)
    return markdown


def write_edit_rule_comparison(run, bundle, out: Path, *, split: str = "test", n_images: int = 24, steps: int = 9,
                               top_k: int | None = None, run_label: str = "") -> str:
    """Every edit rule variant verified on the same images (``out/edit_verification.{json,md}``) and
    ranked (``out/edit_rules.{json,md}``, :func:`~attri_ssc.interpret.edit_rules.rank_edit_rules`).

    Returns:
        The ranking's Markdown.
    """
    from attri_ssc.interpret.edit_rules import EDIT_TARGETS, edit_rules_markdown, rank_edit_rules
    from attri_ssc.interpret.verification import VARIANTS

    write_verification(run, bundle, out, split=split, n_images=n_images, steps=steps, top_k=top_k,
                       variants=VARIANTS, run_label=run_label)
    report = read_json(out / "edit_verification.json")
    rows = rank_edit_rules(report)
    markdown = edit_rules_markdown(rows, report)
    write_json(out / "edit_rules.json", {"run": report.get("run"), "targets": EDIT_TARGETS, "ranking": rows})
    write_text(out / "edit_rules.md", markdown)
    return markdown


def write_samples(run, bundle, out: Path, *, n: int = 16, seed: int = 0, split: str = "test",
                  weights_dir: str | None = None, prior=None) -> dict:
    """``n`` images from the sparse code prior → ``out`` (PNG) and MMD (and FID) against the
    held-out ``split`` → ``out`` with suffix ``.json``; returns those metrics.

    Args:
        seed: seeds the draws from the prior.
        prior: the fitted :class:`~attri_ssc.interpret.sampling.CodePrior`; None: the one saved in the
            run folder (``RUN/interpretation.*``, what ``attri_ssc.Run.sample`` draws from), else one
            fitted here on the training codes with the same seed (0).
    """
    from attri_ssc.interpret.editing import collect_codes
    from attri_ssc.interpret.sampling import CodePrior, decode_samples, sample_quality
    from attri_ssc.interpret.statistics import DEFAULT_PRIOR_SEED, load_statistics
    from attri_ssc.reports.figures import sample_grid

    backbone = run.model.backbone
    if prior is None:
        saved = load_statistics(run.run_dir)
        prior = (saved.prior if saved is not None
                 else CodePrior(seed=DEFAULT_PRIOR_SEED).fit(collect_codes(backbone, bundle.train.images)))
    held = split_dataset(bundle, split).images
    n_metric = max(n, held.shape[0])
    samples = decode_samples(backbone, prior.sample(n_metric, seed=seed))
    recon = decode_samples(backbone, collect_codes(backbone, held))
    metrics = sample_quality(samples, held, recon, weights_dir)
    metrics.update(prior=prior.describe(), split=split, seed=seed)
    sample_grid(samples[:n], out, title=f"{n} samples (sparse PCA-GMM code prior)")
    write_json(out.with_suffix(".json"), metrics)
    return metrics


def samples_line(metrics: dict, n: int, out: Path) -> str:
    """The one-line summary ``attri-ssc sample`` prints."""
    fid = metrics["fid"]
    return (f"{n} samples → {out}; MMD×10² {metrics['mmd_x100']:.3f} vs {metrics['split']} "
            f"(reconstructions: {metrics['reference_recon_mmd_x100']:.3f}); "
            f"FID {fid if isinstance(fid, str) else f'{fid:.2f}'}")


# ---------------------------------------------------------------------------- every figure of a run
def interpret_all(run_dir: Path, out: Path, data_dir: Path | None = None, weights_dir: str | None = None,
                  n_images: int = 24, log: Callable[[str], None] = print, layout: str | None = None,
                  verification: bool = True) -> dict:
    """Interpolation, one edit strip per attribute, edit verification, correlations and samples
    of one run → ``out`` (PNGs, JSON) and the index ``out/interpret.json``, which is returned.
    ``layout`` reads the data folder in another layout than the run recorded. ``verification=False``
    leaves the edit verification to ``attri-ssc verify-edits RUN --out OUT/verification`` (run
    beside this, as ``make demo`` does; the report reads its JSON from there)."""
    from attri_ssc.interpret.edit_references import DEFAULT_RULE
    from attri_ssc.interpret.editing import HOLD_FIXED, alpha_grid, feedback_hold

    out.mkdir(parents=True, exist_ok=True)
    run, bundle = load_run_and_data(run_dir, data_dir, layout=layout)
    test = split_dataset(bundle, "test")
    names = list(run.attribute_names)
    index: dict = {}
    # Interpolate between the test items with the smallest and the largest LV cavity.
    lv = next((names.index(n) for n in ("lv_area", "lv_volume") if n in names), 0)
    order = test.raw_attributes[:, lv].argsort()
    a, b = item_label(test, int(order[0])), item_label(test, int(order[-1]))
    log(write_interpolation(run, bundle, a, b, 8, out / "interpolation.png"))
    unit = "slices" if run.config.data.spatial_dims == 2 else "volumes"
    index["interpolation"] = {"png": "interpolation.png",
                              "caption": f"Decoded interpolation of codes Z between test {unit} {a} (smallest LV "
                                         f"cavity) and {b} (largest), Eq. 16; outer columns are the inputs."}
    # One edit strip per supervised attribute on a mid-sized test item.
    middle = item_label(test, int(order[len(order) // 2]))
    index["edits"] = {}
    for name in names:
        png = f"edit_{name}.png"
        log(write_edit(run, bundle, middle, name, out / png, rule=DEFAULT_RULE, alphas=alpha_grid(9)))
        fixed = ([names[o] for o in feedback_hold(names, names.index(name))] if DEFAULT_RULE == "feedback"
                 else [f for f in HOLD_FIXED.get(name, ()) if f in names])
        rule = f"{DEFAULT_RULE} rule" + (f" holding {', '.join(fixed)} fixed" if fixed else "")
        index["edits"][name] = {"png": png, "caption": f"Editing {name} of {middle} (A.5 atoms, {rule}, "
                                                       f"α from −1 to 1, original in the centre) with the "
                                                       f"gradient saliency of the edited atoms below."}
    if verification:
        log(write_verification(run, bundle, out / "verification", n_images=n_images, run_label=str(run_dir)))
        log(f"written to {out / 'verification'}")
        index["verification"] = verification_entry(read_json(out / "verification" / "edit_verification.json"))
    log(write_correlations(run, bundle, "test", out / "correlations"))
    log(f"written to {out / 'correlations'}")
    index["correlations"] = correlation_entry(read_json(out / "correlations" / "correlations.json"))
    metrics = write_samples(run, bundle, out / "samples.png", n=16, weights_dir=weights_dir)
    log(samples_line(metrics, 16, out / "samples.png"))
    index["samples"] = {"png": "samples.png", "caption": "Images decoded from codes drawn from the sparse prior.",
                        "metrics": {k: metrics[k] for k in ("mmd_x100", "reference_recon_mmd_x100", "fid")
                                    if k in metrics}}
    write_json(out / "interpret.json", index)
    return index


def verification_entry(report: dict) -> dict:
    """Table rows (rule variant × attribute) and a one-line summary from edit_verification.json."""
    header = ["rule", "attribute", "monotonicity ρ", "leakage", "leakage (all)", "atoms"]
    rows, summary = [], []
    variants = report.get("results", {})
    for variant, per_attr in variants.items():
        for attr, res in per_attr.items():
            rows.append([variant, attr, res.get("monotonicity"), res.get("leakage"), res.get("leakage_all"),
                         ", ".join(map(str, res.get("atoms", [])))])
    default = next(iter(variants), None)
    for attr in ("lv_area", "lv_volume", "myo_area", "myo_volume"):
        res = variants.get(default, {}).get(attr) if default else None
        if res and res.get("monotonicity") is not None:
            leak = res.get("leakage")
            summary.append(f"{attr} ρ {res['monotonicity']:.2f}, leakage {leak:.2f}" if leak is not None
                           else f"{attr} ρ {res['monotonicity']:.2f}")
    return {"table": [header, rows], "summary": f"({default}) " + "; ".join(summary) if summary else ""}


def correlation_entry(result: dict) -> dict:
    """The report's correlation table (attribute pairs) and W heatmap entry from correlations.json."""
    header = ["attribute pair", "r (ground truth)", "p", "r (â)", "p (â)", "shared atoms"]
    rows = [[f"{p['a']} – {p['b']}", p.get("r_sample"), p.get("p_sample"), p.get("r_recon"), p.get("p_recon"),
             ", ".join(map(str, p.get("shared_atoms", []))) or "none"] for p in result.get("pairs", [])]
    return {"table": [header, rows], "png": "correlations/w_heatmap.png",
            "caption": "Mapper W (attributes × atoms, support only): which atoms carry which attribute."}
