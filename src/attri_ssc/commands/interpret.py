"""Interpretation and generation subcommands (paper Section 4.2, Appendices A.4–A.5).

* ``interpolate RUN CASE_A CASE_B --steps 8 --out PNG``: Eq. 16 between two images' codes.
* ``edit RUN CASE --attribute NAME [--rule feedback|shift|prototype|magnitude|literal] [--no-hold-fixed] [--steps 9] --out PNG``:
  A.5's edit strip with saliency (Figure 3).
* ``correlations RUN --out DIR``: Table 3, atoms per attribute, W heatmap.
* ``verify-edits RUN --out DIR``: monotonicity and leakage of edits, measured by the
  model-free judge (2D phantoms).
* ``sample RUN -n 16 --out PNG``: images from a sparse prior over training codes, with MMD
  (and FID) against held-out images in a JSON next to the PNG.

CASE is a case id (``P012``), optionally ``P012:4`` for slice 4 of a 2D run; without a
slice, the middle slice containing myocardium. Cases may come from any split.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from attri_ssc.errors import ConfigError, DataError

#: What ``edit`` (and the report's edit strips) use unless told otherwise; chosen by the edit
#: verification (README "Editing"): on the area models the best rule for both cavity and myocardium.
DEFAULT_RULE = "feedback"


# ---------------------------------------------------------------------------- registration
def register(sub: argparse._SubParsersAction) -> None:
    from attri_ssc.commands.data_options import add_layout_argument

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("run", type=Path, help="run folder written by attri-ssc train")
        p.add_argument("--data", type=Path, default=None, help="data folder (default: the one the run used)")
        p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
        add_layout_argument(p)

    p = sub.add_parser("interpolate", help="latent interpolation between two images (Eq. 16) → PNG")
    common(p)
    p.add_argument("case_a", metavar="CASE_A", help="case id, optionally CASE:SLICE")
    p.add_argument("case_b", metavar="CASE_B", help="case id, optionally CASE:SLICE")
    p.add_argument("--steps", type=int, default=8, help="frames including both ends (>= 2; default 8)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.set_defaults(func=_interpolate)

    p = sub.add_parser("edit", help="edit one attribute of one image (A.5) → PNG strip with saliency")
    common(p)
    p.add_argument("case", metavar="CASE", help="case id, optionally CASE:SLICE")
    p.add_argument("--attribute", required=True, help="attribute to edit (one the run supervises)")
    p.add_argument("--rule", choices=("feedback", "prototype", "shift", "magnitude", "literal"), default=DEFAULT_RULE,
                   help=f"feedback (per-image steps that the model, re-encoding the edit, reads as the attribute "
                        f"changing with the others held), prototype (toward training code maps at the attribute's "
                        f"ends), shift (by half the difference of those maps), magnitude (scalar bounds applied "
                        f"to |Z|, right for signed codes) or literal (A.5 as printed); default {DEFAULT_RULE}")
    p.add_argument("--quantile", type=float, default=0.9,
                   help="prototype/shift rules: average the training images beyond this quantile (default 0.9)")
    p.add_argument("--hold-fixed", action=argparse.BooleanOptionalAction, default=None,
                   help="prototype/shift rules: choose the high/low training images by the attribute's residual "
                        "after regressing out the attributes its edit should not move (cavity ↔ myocardium, "
                        "wall thickness → cavity); default: on for shift, off for prototype (the previous "
                        "default rule, unchanged)")
    p.add_argument("--active-only", action="store_true", help="only change locations where the atom is active")
    p.add_argument("--exclusive", action="store_true", help="leave out atoms other attributes also use")
    p.add_argument("--steps", type=int, default=9, help="α values in [-1, 1], odd (default 9)")
    p.add_argument("--top-k", type=int, default=None, help="atoms to edit (default: the run's train.top_k)")
    p.add_argument("--percentile", type=float, default=99.0, help="robust bound percentile (default 99)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.set_defaults(func=_edit)

    p = sub.add_parser("correlations", help="Table 3: attribute-pair correlations, atoms per attribute, W heatmap")
    common(p)
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--out", type=Path, required=True, help="folder for correlations.{json,md} and w_heatmap.png")
    p.set_defaults(func=_correlations)

    p = sub.add_parser("verify-edits", help="measure edits with the model-free judge: monotonicity and leakage")
    common(p)
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--n-images", type=int, default=24, help="held-out images to edit (default 24)")
    p.add_argument("--steps", type=int, default=9, help="α values in [-1, 1], odd (default 9)")
    p.add_argument("--top-k", type=int, default=None, help="atoms to edit (default: the run's train.top_k)")
    p.add_argument("--percentile", type=float, default=99.0, help="robust bound percentile (default 99)")
    p.add_argument("--quantile", type=float, default=0.9,
                   help="prototype and shift rules (plain and hold-fixed): average the training images beyond "
                        "this quantile (default 0.9)")
    p.add_argument("--variant", action="append", default=None, metavar="NAME",
                   help="verify only this rule variant (repeatable; e.g. feedback, shift+conditional, literal); "
                        "default: all")
    p.add_argument("--out", type=Path, required=True, help="folder for edit_verification.{json,md}")
    p.set_defaults(func=_verify)

    p = sub.add_parser("sample", help="generate images from a sparse prior over training codes → PNG (+ JSON)")
    common(p)
    p.add_argument("-n", type=int, default=16, help="images in the grid (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("val", "test"), default="test", help="held-out split for MMD/FID")
    p.add_argument("--weights", default=None, help="folder of attri-ssc weights fetch (FID)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write; metrics go to the same name .json")
    p.set_defaults(func=_sample)


# ---------------------------------------------------------------------------- shared helpers
def load_run_and_data(run_dir: Path, data_dir: Path | None, device: str = "cpu", layout: str | None = None):
    """(LoadedRun, DataBundle) for an Attri-SSC-VAE run; errors name what is wrong. The data
    folder is read in the layout the run recorded unless ``layout`` names another."""
    from attri_ssc.data.datasets import build_datasets
    from attri_ssc.runs import load_run

    run = load_run(run_dir, device=device)
    if run.family != "attri_ssc":
        raise ConfigError(f"{run_dir} is a {run.family!r} run; interpretation needs an attri_ssc run")
    folder = Path(data_dir) if data_dir is not None else Path(run.data_dir or "")
    if not str(folder) or not folder.exists():
        raise DataError(f"data folder not found: {folder or '(none recorded)'}; pass --data")
    data_cfg = run.config.data if layout is None else dataclasses.replace(run.config.data, layout=layout)
    bundle = build_datasets(folder, data_cfg, split=run.split or None)  # the run's own split
    return run, bundle


def _datasets(bundle) -> list:
    return [bundle.train, bundle.val, bundle.test]


def resolve_item(bundle, spec: str) -> tuple[Any, int]:
    """(dataset, index) of ``CASE`` or ``CASE:SLICE``; 2D default: the middle myocardial slice."""
    case, _, slice_txt = spec.partition(":")
    for ds in _datasets(bundle):
        idx = [i for i, c in enumerate(ds.case_ids) if c == case]
        if not idx:
            continue
        idx.sort(key=lambda i: ds.slice_indices[i])
        if not slice_txt:
            return ds, idx[len(idx) // 2]
        valid = [ds.slice_indices[i] for i in idx]
        try:
            want = int(slice_txt)
        except ValueError:
            raise ConfigError(f"bad slice {slice_txt!r} in {spec!r}; valid slices of {case}: {valid}") from None
        if want not in valid:
            raise ConfigError(f"case {case} has no item for slice {want}; valid slices (with myocardium): {valid}")
        return ds, idx[valid.index(want)]
    known = sorted({c for ds in _datasets(bundle) for c in ds.case_ids})
    raise ConfigError(f"unknown case {case!r}; valid cases: {', '.join(known)}")


def attribute_index(run, name: str) -> int:
    names = list(run.attribute_names)
    if name not in names:
        raise ConfigError(f"unknown attribute {name!r}; this run supervises: {', '.join(names)}")
    return names.index(name)


def _label(ds, i: int) -> str:
    s = ds.slice_indices[i]
    return ds.case_ids[i] + (f":{s}" if s >= 0 else "")


def _split(bundle, name: str):
    ds = {"train": bundle.train, "val": bundle.val, "test": bundle.test}[name]
    if len(ds) == 0:
        raise DataError(f"the {name} split is empty")
    return ds


def _top_k(run, top_k: int | None) -> int:
    k = run.config.train.top_k if top_k is None else top_k
    if k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {k}")
    return k


def _bounds_and_prototypes(run, bundle, percentile: float, quantile: float | None, codes=None):
    """The run's atom bounds and, unless ``quantile`` is None, the plain and the conditional
    (hold-fixed) prototype code maps, encoding the training split at most once (not at all when
    ``codes``, the training codes, are given)."""
    from attri_ssc.interpret.editing import (collect_codes, hold_fixed_indices, prototypes_from_codes,
                                              run_atom_bounds)

    train = bundle.train
    if codes is None and quantile is not None:
        codes = collect_codes(run.model.backbone, train.images)
    bounds = run_atom_bounds(run, train.images, train.case_ids, percentile, codes=codes)
    if quantile is None:
        return bounds, None, None
    plain = prototypes_from_codes(codes, train.attributes, quantile)
    conditional = prototypes_from_codes(codes, train.attributes, quantile, hold_fixed_indices(run.attribute_names))
    return bounds, plain, conditional


def attribute_units(run, bundle, codes=None):
    """The ``feedback`` rule's :class:`AttributeUnits`, from the model's reading of the training split.

    The mapper's â is fitted to rank the attributes (L_AR), not to their scale, so each attribute's
    â is calibrated against the training truth by least squares, raw ≈ c·â + d. One training standard
    deviation of the attribute is then sd(raw)/c in â's units, and a physical 0 sits at â = −d/c.
    An attribute whose calibration slope is not positive (the model does not read it) falls back
    to the spread of its â and no physical zero (mapper value ``NaN``: no cap).

    Args:
        codes: the training images' codes (N, K, *s) if already computed.
    """
    import numpy as np
    import torch

    from attri_ssc.interpret.editing import AttributeUnits, collect_codes

    train = bundle.train
    z = collect_codes(run.model.backbone, train.images) if codes is None else codes
    with torch.no_grad():
        device = next(run.model.parameters()).device
        pred = run.model.mapper(z.to(device)).double().cpu().numpy()
    raw = train.raw_attributes.double().numpy()
    sd, zero, slopes = [], [], []
    for m in range(raw.shape[1]):
        spread_hat, spread_raw = float(pred[:, m].std()), float(raw[:, m].std())
        slope, intercept = (np.polyfit(pred[:, m], raw[:, m], 1) if spread_hat > 0 and spread_raw > 0
                            else (0.0, 0.0))
        if slope > 0:
            sd.append(spread_raw / slope)
            zero.append(-intercept / slope)
            slopes.append(float(slope))
        else:
            sd.append(spread_hat if spread_hat > 0 else 1.0)
            zero.append(float("nan"))
            slopes.append(float("nan"))
    return AttributeUnits(sd=torch.tensor(sd, dtype=torch.float32), zero=torch.tensor(zero, dtype=torch.float32),
                          slope=torch.tensor(slopes, dtype=torch.float32))


def _check_quantile(quantile: float) -> None:
    if not 0.5 < quantile < 1.0:
        raise ConfigError(f"--quantile must be in (0.5, 1), got {quantile}")


def _check_png(path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--out must name a .png file, got {path}")


# ---------------------------------------------------------------------------- commands
def _interpolate(args: argparse.Namespace) -> int:
    from attri_ssc.interpret.interpolation import interpolate
    from attri_ssc.reports.figures import interpolation_grid

    _check_png(args.out)
    if args.steps < 2:
        raise ConfigError(f"--steps must be >= 2, got {args.steps}")
    run, bundle = load_run_and_data(args.run, args.data, args.device, args.layout)
    ds_a, ia = resolve_item(bundle, args.case_a)
    ds_b, ib = resolve_item(bundle, args.case_b)
    result = interpolate(run.model.backbone, ds_a[ia]["image"], ds_b[ib]["image"], steps=args.steps)
    interpolation_grid(result.images.clamp(0, 1), result.alphas.tolist(), args.out,
                       title=f"{_label(ds_a, ia)} → {_label(ds_b, ib)} (Eq. 16)",
                       inputs=(ds_a[ia]["image"], ds_b[ib]["image"]))
    print(f"interpolation {_label(ds_a, ia)} → {_label(ds_b, ib)} in {args.steps} steps → {args.out}")
    return 0


def _edit(args: argparse.Namespace) -> int:
    from attri_ssc.interpret.editing import (PROTOTYPE_RULES, FeedbackSettings, alpha_grid, collect_codes,
                                              edit_sweep, feedback_hold, select_atoms)
    from attri_ssc.reports.figures import edit_strip

    _check_png(args.out)
    _check_quantile(args.quantile)
    try:
        alphas = alpha_grid(args.steps)
    except ValueError as exc:
        raise ConfigError(f"--steps: {exc}") from None
    run, bundle = load_run_and_data(args.run, args.data, args.device, args.layout)
    a = attribute_index(run, args.attribute)
    ds, i = resolve_item(bundle, args.case)
    train_codes = collect_codes(run.model.backbone, bundle.train.images)  # bounds, prototypes and units
    bounds, plain, conditional = _bounds_and_prototypes(run, bundle, args.percentile,
                                                        args.quantile if args.rule in PROTOTYPE_RULES else None,
                                                        train_codes)
    hold_fixed = args.hold_fixed if args.hold_fixed is not None else args.rule == "shift"
    prototypes = conditional if hold_fixed else plain
    selection = select_atoms(run.model.mapper.effective_weight(), a, _top_k(run, args.top_k), args.exclusive)
    if not selection.atoms:
        raise ConfigError(f"attribute {args.attribute!r} has no atom to edit (non-zero in W"
                          f"{', used by no other attribute' if args.exclusive else ''})")
    units = attribute_units(run, bundle, train_codes)
    loop = (feedback_hold(run.attribute_names, a), units, FeedbackSettings()) if args.rule == "feedback" else None
    sweep = edit_sweep(run.model, ds[i]["image"], selection, bounds, alphas, args.rule, args.active_only,
                       prototypes=prototypes, feedback=loop)
    # â ranks the attribute but is not on its scale: report it through the training calibration
    pred = units.physical(sweep.predicted.double())[:, a]
    held_names = ([run.attribute_names[o] for o in loop[0]] if loop is not None
                  else [run.attribute_names[o] for o in prototypes.conditioned_on[a]]
                  if prototypes is not None and hold_fixed and a in prototypes.conditioned_on else [])
    rule = (args.rule + (", holding " + ", ".join(held_names) + " fixed" if held_names else "")
            + (" (active only)" if args.active_only else "") + (" (exclusive atoms)" if args.exclusive else ""))
    edit_strip(ds[i]["image"], sweep.images, alphas.tolist(), args.out, saliency=sweep.saliency,
               title=f"{_label(ds, i)}: {args.attribute} edited via atoms {list(selection.atoms)} ({rule}); "
                     f"model's reading (calibrated â) {float(pred[0]):.3g} → {float(pred[-1]):.3g}")
    print(f"edited {args.attribute} of {_label(ds, i)} via atoms {list(selection.atoms)} "
          f"(signs {[int(s) for s in selection.signs]}, rule {rule}) → {args.out}")
    return 0


def _unscale(bundle, values):
    return bundle.scaler.inverse_transform(values.double().numpy())


def _correlations(args: argparse.Namespace) -> int:
    from attri_ssc.interpret.correlations import correlation_analysis, correlations_markdown
    from attri_ssc.evaluation.predict import predict
    from attri_ssc.io_utils import write_json, write_text
    from attri_ssc.reports.figures import weight_heatmap

    run, bundle = load_run_and_data(args.run, args.data, args.device, args.layout)
    ds = _split(bundle, args.split)
    pred = predict(run, ds)
    weight = run.model.mapper.effective_weight().detach().cpu().numpy()
    result = correlation_analysis(pred.raw_attributes.numpy(), _unscale(bundle, pred.attributes),
                                  run.attribute_names, weight, pred.case_ids)
    result["split"] = args.split
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "correlations.json", result)
    write_text(args.out / "correlations.md", correlations_markdown(result))
    weight_heatmap(weight, run.attribute_names, args.out / "w_heatmap.png")
    print(correlations_markdown(result))
    print(f"written to {args.out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from attri_ssc.interpret.editing import collect_codes
    from attri_ssc.interpret.verification import VARIANTS, held_out_images, verification_markdown, verify_edits
    from attri_ssc.io_utils import write_json, write_text

    if args.n_images < 2:
        raise ConfigError(f"--n-images must be >= 2, got {args.n_images}")
    known = [v.name for v in VARIANTS]
    unknown = [v for v in args.variant or () if v not in known]
    if unknown:
        raise ConfigError(f"unknown --variant {', '.join(unknown)}; choose from: {', '.join(known)}")
    variants = [v for v in VARIANTS if args.variant is None or v.name in args.variant]
    _check_quantile(args.quantile)
    run, bundle = load_run_and_data(args.run, args.data, args.device, args.layout)
    if run.config.data.spatial_dims != 2:
        raise ConfigError("verify-edits measures 2D slices; this run is 3D")
    spacing = float(run.config.data.spacing_mm)
    try:
        held_out, scale = held_out_images(_split(bundle, args.split), bundle.cases, spacing, args.n_images)
    except ValueError as exc:
        raise DataError(f"{args.split} split: {exc}") from None
    train_codes = collect_codes(run.model.backbone, bundle.train.images)
    bounds, plain, conditional = _bounds_and_prototypes(run, bundle, args.percentile, args.quantile, train_codes)
    try:
        report = verify_edits(run.model, held_out, run.attribute_names, bounds, spacing, scale,
                              _top_k(run, args.top_k), steps=args.steps, prototypes=plain,
                              variants=variants, conditional_prototypes=conditional,
                              attribute_units=attribute_units(run, bundle, train_codes))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    report["run"] = str(args.run)
    report["split"] = args.split
    edited = [n for n in report.get("judged", []) if n != "wall_thickness"]
    targets = {f"monotonicity ({', '.join(edited)})": ">= 0.9", "leakage": "<= 0.5"}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "edit_verification.json", report)
    md = verification_markdown(report, targets)
    write_text(args.out / "edit_verification.md", md)
    print(md)
    print(f"written to {args.out}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from attri_ssc.interpret.editing import collect_codes
    from attri_ssc.interpret.sampling import CodePrior, decode_samples, sample_quality
    from attri_ssc.io_utils import write_json
    from attri_ssc.reports.figures import sample_grid

    _check_png(args.out)
    if args.n < 1:
        raise ConfigError(f"-n must be >= 1, got {args.n}")
    run, bundle = load_run_and_data(args.run, args.data, args.device, args.layout)
    backbone = run.model.backbone
    prior = CodePrior(seed=args.seed).fit(collect_codes(backbone, bundle.train.images))
    held = _split(bundle, args.split).images
    n_metric = max(args.n, held.shape[0])
    samples = decode_samples(backbone, prior.sample(n_metric, seed=args.seed))
    recon = decode_samples(backbone, collect_codes(backbone, held))
    metrics = sample_quality(samples, held, recon, args.weights)
    metrics.update(prior=prior.describe(), split=args.split, seed=args.seed)
    sample_grid(samples[:args.n], args.out, title=f"{args.n} samples (sparse PCA-GMM code prior)")
    write_json(args.out.with_suffix(".json"), metrics)
    fid = metrics["fid"]
    print(f"{args.n} samples → {args.out}; MMD×10² {metrics['mmd_x100']:.3f} vs {args.split} "
          f"(reconstructions: {metrics['reference_recon_mmd_x100']:.3f}); FID {fid if isinstance(fid, str) else f'{fid:.2f}'}")
    return 0
