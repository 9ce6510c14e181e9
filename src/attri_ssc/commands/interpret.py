"""Interpretation and generation subcommands (paper Section 4.2, Appendices A.4–A.5).

* ``interpolate RUN CASE_A CASE_B --steps 8 --out PNG``: Eq. 16 between two images' codes.
* ``edit RUN CASE --attribute NAME [--rule feedback|shift|prototype|magnitude|literal] [--no-hold-fixed] [--steps 9] --out PNG``:
  A.5's edit strip with saliency (Figure 3); ``edit RUN --settings FILE --out PNG`` replays an edit
  exported by the explorer or ``attri_ssc.Run.edit`` (and writes its images as OUT.npy).
* ``correlations RUN --out DIR``: Table 3, atoms per attribute, W heatmap.
* ``verify-edits RUN --out DIR``: monotonicity and leakage of edits, measured by the
  model-free judge (2D phantoms).
* ``sample RUN -n 16 --out PNG``: images from a sparse prior over training codes, with MMD
  (and FID) against held-out images in a JSON next to the PNG.

CASE is a case id (``P012``), optionally ``P012:4`` for slice 4 of a 2D run; without a
slice, the middle slice containing myocardium. Cases may come from any split.

``interpolate``, ``edit`` and ``sample`` are faces of the Python API (``attri_ssc.load_run`` ->
``Run.interpolate/edit/sample``), which uses the training-split statistics saved in the run folder
(``RUN/interpretation.*``; computed from the data folder, and saved, for runs trained before them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attri_ssc.errors import ConfigError, DataError

#: What ``edit`` (and the report's edit strips) use unless told otherwise; chosen by the edit
#: verification (README "Editing"): on the area models the best rule for both cavity and myocardium.
DEFAULT_RULE = "feedback"


# ---------------------------------------------------------------------------- registration
def register(sub: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("run", type=Path, help="run folder written by attri-ssc train")
        p.add_argument("--data", type=Path, default=None, help="data folder (default: the one the run used)")
        p.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    p = sub.add_parser("interpolate", help="latent interpolation between two images (Eq. 16) → PNG")
    common(p)
    p.add_argument("case_a", metavar="CASE_A", help="case id, optionally CASE:SLICE")
    p.add_argument("case_b", metavar="CASE_B", help="case id, optionally CASE:SLICE")
    p.add_argument("--steps", type=int, default=8, help="frames including both ends (>= 2; default 8)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.set_defaults(func=_interpolate)

    p = sub.add_parser("edit", help="edit one attribute of one image (A.5) → PNG strip with saliency")
    common(p)
    p.add_argument("case", metavar="CASE", nargs="?", default=None,
                   help="case id, optionally CASE:SLICE (not with --settings)")
    p.add_argument("--attribute", default=None, help="attribute to edit (one the run supervises); required "
                   "unless --settings")
    p.add_argument("--settings", type=Path, default=None, metavar="FILE",
                   help="replay an exported edit (EditSettings JSON from the explorer or Run.edit(...).settings): "
                        "case, slice (or the exported image), attribute, rule, α values, holds and atoms come "
                        "from FILE; also writes the edited images (len(α), 1, *S) as OUT with suffix .npy")
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
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the draws from the run's code prior (fitted once, with seed 0, on the training "
                        "codes and saved in RUN/interpretation.*)")
    p.add_argument("--split", choices=("val", "test"), default="test", help="held-out split for MMD/FID")
    p.add_argument("--weights", default=None, help="folder of attri-ssc weights fetch (FID)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write; metrics go to the same name .json")
    p.set_defaults(func=_sample)


# ---------------------------------------------------------------------------- shared helpers
def load_run_and_data(run_dir: Path, data_dir: Path | None, device: str = "cpu"):
    """(LoadedRun, DataBundle) for an Attri-SSC-VAE run; errors name what is wrong."""
    from attri_ssc.data.datasets import build_datasets
    from attri_ssc.runs import load_run

    run = load_run(run_dir, device=device)
    if run.family != "attri_ssc":
        raise ConfigError(f"{run_dir} is a {run.family!r} run; interpretation needs an attri_ssc run")
    folder = Path(data_dir) if data_dir is not None else Path(run.data_dir or "")
    if not str(folder) or not folder.is_dir():
        raise DataError(f"data folder not found: {folder or '(none recorded)'}; pass --data")
    bundle = build_datasets(folder, run.config.data, split=run.split or None)  # the run's own split
    return run, bundle


def attribute_index(run, name: str) -> int:
    names = list(run.attribute_names)
    if name not in names:
        raise ConfigError(f"unknown attribute {name!r}; this run supervises: {', '.join(names)}")
    return names.index(name)


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
    """The ``feedback`` rule's :class:`AttributeUnits` of a run (the mapper's â calibrated against the
    training truth; :func:`attri_ssc.interpret.statistics.calibrate_units`).

    Args:
        codes: the training images' codes (N, K, *s) if already computed.
    """
    from attri_ssc.interpret.editing import collect_codes
    from attri_ssc.interpret.statistics import calibrate_units

    train = bundle.train
    z = collect_codes(run.model.backbone, train.images) if codes is None else codes
    return calibrate_units(run.model.mapper, z, train.raw_attributes)


def api_run(args: argparse.Namespace):
    """The :class:`attri_ssc.Run` of ``args.run`` (the CLI's face on the Python API); the data folder is
    ``--data`` or the one the run recorded (for runs saved without their interpretation statistics)."""
    from attri_ssc.api import load_run

    data = args.data
    if data is None:
        from attri_ssc.runs import load_run as load_loaded

        recorded = load_loaded(args.run).data_dir
        data = Path(recorded) if recorded and Path(recorded).is_dir() else None
    return load_run(args.run, data=data, device=args.device)


def _check_quantile(quantile: float) -> None:
    if not 0.5 < quantile < 1.0:
        raise ConfigError(f"--quantile must be in (0.5, 1), got {quantile}")


def _check_png(path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--out must name a .png file, got {path}")


# ---------------------------------------------------------------------------- commands
def api_item(run, spec: str) -> tuple[dict, str]:
    """(item, label) of ``CASE`` or ``CASE:SLICE`` in the run's data (:meth:`attri_ssc.Run.item`)."""
    case, _, slice_txt = spec.partition(":")
    try:
        slice_index = int(slice_txt) if slice_txt else None
    except ValueError:
        raise ConfigError(f"bad slice {slice_txt!r} in {spec!r}") from None
    item = run.item(case, slice_index)
    return item, item["case_id"] + (f":{item['slice']}" if item["slice"] is not None else "")


def _interpolate(args: argparse.Namespace) -> int:
    """Through the Python API (``Run.interpolate``)."""
    from attri_ssc.interpret.interpolation import interpolation_alphas
    from attri_ssc.reports.figures import interpolation_grid

    _check_png(args.out)
    if args.steps < 2:
        raise ConfigError(f"--steps must be >= 2, got {args.steps}")
    run = api_run(args)
    (a, label_a), (b, label_b) = api_item(run, args.case_a), api_item(run, args.case_b)
    frames = run.interpolate(a["image"], b["image"], steps=args.steps)
    interpolation_grid(frames.clamp(0, 1), interpolation_alphas(args.steps).tolist(), args.out,
                       title=f"{label_a} → {label_b} (Eq. 16)", inputs=(a["image"], b["image"]))
    print(f"interpolation {label_a} → {label_b} in {args.steps} steps → {args.out}")
    return 0


def _edit(args: argparse.Namespace) -> int:
    """Through the Python API (``Run.edit``), so the CLI, notebooks and the explorer edit alike."""
    import numpy as np

    from attri_ssc.api import save_npy
    from attri_ssc.interpret.editing import alpha_grid
    from attri_ssc.reports.figures import edit_strip

    _check_png(args.out)
    _check_quantile(args.quantile)
    if args.settings is not None:
        if args.case is not None or args.attribute is not None:
            raise ConfigError("--settings replays a saved edit: give no CASE and no --attribute with it")
        run = api_run(args)
        result, image = run.replay(args.settings)
        label = (result.settings.case_id or Path(result.settings.image_path or "image").name) + (
            f":{result.settings.slice}" if result.settings.slice is not None else "")
    else:
        if args.case is None or args.attribute is None:
            raise ConfigError("edit needs CASE and --attribute (or --settings FILE)")
        try:
            alphas = alpha_grid(args.steps)
        except ValueError as exc:
            raise ConfigError(f"--steps: {exc}") from None
        run = api_run(args)
        run.attribute_index(args.attribute)
        item, label = api_item(run, args.case)
        image = item["image"]
        if args.hold_fixed is None or args.rule not in ("prototype", "shift"):
            hold = None
        else:
            a = run.attribute_index(args.attribute)
            hold = ([run.attribute_names[o] for o in run.statistics.conditional_prototypes.conditioned_on.get(a, ())]
                    if args.hold_fixed else [])
        result = run.edit(image, args.attribute, alphas.tolist(), args.rule, hold, top_k=args.top_k,
                          active_only=args.active_only, exclusive=args.exclusive, saliency=True,
                          percentile=args.percentile, quantile=args.quantile,
                          case_id=item["case_id"], slice=item["slice"])
    s = result.settings
    a = run.attribute_index(s.attribute)
    rule = (s.rule + (", holding " + ", ".join(s.hold) + " fixed" if s.hold else "")
            + (" (active only)" if s.active_only else "") + (" (exclusive atoms)" if s.exclusive else ""))
    reading = result.readings[:, 0, a]
    edit_strip(image, result.images[:, 0], s.alphas, args.out, saliency=result.saliency[:, 0],
               title=f"{label}: {s.attribute} edited via atoms {s.atoms} ({rule}); "
                     f"model's re-read (calibrated â) {float(reading[0]):.3g} → {float(reading[-1]):.3g}")
    if args.settings is not None:
        save_npy(args.out.with_suffix(".npy"), result.images[:, 0].numpy())
    weight = run.model.mapper.effective_weight().detach()[a]
    signs = [int(np.sign(float(weight[j]))) for j in s.atoms]
    print(f"edited {s.attribute} of {label} via atoms {s.atoms} (signs {signs}, rule {rule}) → {args.out}")
    return 0


def _unscale(bundle, values):
    return bundle.scaler.inverse_transform(values.double().numpy())


def _correlations(args: argparse.Namespace) -> int:
    from attri_ssc.interpret.correlations import correlation_analysis, correlations_markdown
    from attri_ssc.evaluation.predict import predict
    from attri_ssc.io_utils import write_json, write_text
    from attri_ssc.reports.figures import weight_heatmap

    run, bundle = load_run_and_data(args.run, args.data, args.device)
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
    run, bundle = load_run_and_data(args.run, args.data, args.device)
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
    """Through the Python API (``Run.sample``: the code prior saved with the run, seeded by --seed)."""
    from attri_ssc.interpret.editing import collect_codes
    from attri_ssc.interpret.sampling import decode_samples, sample_quality
    from attri_ssc.io_utils import write_json
    from attri_ssc.reports.figures import sample_grid

    _check_png(args.out)
    if args.n < 1:
        raise ConfigError(f"-n must be >= 1, got {args.n}")
    run = api_run(args)
    backbone = run.model.backbone
    held = _split(run.data_bundle(), args.split).images
    n_metric = max(args.n, held.shape[0])
    samples = run.sample(n_metric, seed=args.seed)
    recon = decode_samples(backbone, collect_codes(backbone, held))
    metrics = sample_quality(samples, held, recon, args.weights)
    metrics.update(prior=run.statistics.prior.describe(), split=args.split, seed=args.seed)
    sample_grid(samples[:args.n], args.out, title=f"{args.n} samples (sparse PCA-GMM code prior)")
    write_json(args.out.with_suffix(".json"), metrics)
    fid = metrics["fid"]
    print(f"{args.n} samples → {args.out}; MMD×10² {metrics['mmd_x100']:.3f} vs {args.split} "
          f"(reconstructions: {metrics['reference_recon_mmd_x100']:.3f}); FID {fid if isinstance(fid, str) else f'{fid:.2f}'}")
    return 0
