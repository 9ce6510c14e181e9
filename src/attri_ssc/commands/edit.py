"""``attri-ssc interpolate`` (Eq. 16) and ``attri-ssc edit`` (A.5's edit strip with saliency, Figure 3).

CASE is a case id (``P012``), optionally ``P012:4`` for slice 4 of a 2D run; without a
slice, the middle slice containing myocardium (3D runs: the case's volume). Cases may come
from any split. ``edit RUN --settings FILE --out PNG`` replays an edit exported by the explorer
or by ``attri_ssc.Run.edit`` (and writes its images as OUT with suffix .npy).

Both commands are faces of the Python API (``attri_ssc.load_run`` -> ``Run.edit`` /
``Run.interpolate``), which uses the training-split statistics saved in the run folder
(``RUN/interpretation.*``; computed from the data folder, and saved, for runs trained before them);
the figures are drawn by :mod:`attri_ssc.reports.figures`.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from attri_ssc.commands.data_options import add_layout_argument
from attri_ssc.errors import ConfigError


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """RUN, --data and --device, shared by the interpretation commands."""
    p.add_argument("run", type=Path, help="run folder written by attri-ssc train")
    p.add_argument("--data", type=Path, default=None, help="data folder (default: the one the run used)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_layout_argument(p)


def check_png(path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--out must name a .png file, got {path}")


def check_quantile(quantile: float) -> None:
    if not 0.5 < quantile < 1.0:
        raise ConfigError(f"--quantile must be in (0.5, 1), got {quantile}")


def add_search_argument(p: argparse.ArgumentParser) -> None:
    """``--search KEY=VALUE`` (repeatable): a setting of the ``feedback`` rule's search."""
    p.add_argument("--search", action="append", default=[], metavar="KEY=VALUE",
                   help="feedback rule: a setting of its search (repeatable), e.g. active_only=false, "
                        "iterations=40, blur_px=0.7; keys: the fields of interpret.editing.FeedbackSettings")


def feedback_settings(items: list[str]):
    """``--search KEY=VALUE`` items → :class:`~attri_ssc.interpret.editing.FeedbackSettings` (YAML values);
    ConfigError naming the item and what was expected."""
    import yaml

    from attri_ssc.interpret.editing import FeedbackSettings

    fields = {f.name: f for f in dataclasses.fields(FeedbackSettings)}
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in fields:
            raise ConfigError(f"--search {item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
        value = yaml.safe_load(text)
        default = fields[key].default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and isinstance(default, int) and not isinstance(default, bool):
                ok = isinstance(value, int)
        else:  # max_relative: a number or null
            ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
        if not ok:
            raise ConfigError(f"--search {item!r}: {key} takes {type(default).__name__ if default is not None else 'a number or null'}"
                              f" values (default {default!r}), got {text!r}")
        values[key] = value
    try:
        return FeedbackSettings(**values)
    except ValueError as exc:
        raise ConfigError(f"--search: {exc}") from None


def register(sub: argparse._SubParsersAction) -> None:
    from attri_ssc.interpret.edit_references import DEFAULT_RULE

    p = sub.add_parser("interpolate", help="latent interpolation between two images (Eq. 16) → PNG")
    add_run_arguments(p)
    p.add_argument("case_a", metavar="CASE_A", help="case id, optionally CASE:SLICE")
    p.add_argument("case_b", metavar="CASE_B", help="case id, optionally CASE:SLICE")
    p.add_argument("--steps", type=int, default=8, help="frames including both ends (>= 2; default 8)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.set_defaults(func=_interpolate)

    p = sub.add_parser("edit", help="edit one attribute of one image (A.5) → PNG strip with saliency")
    add_run_arguments(p)
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
    add_search_argument(p)
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.set_defaults(func=_edit)


def api_run(args: argparse.Namespace):
    """The :class:`attri_ssc.Run` of ``args.run`` (the CLI's face on the Python API); the data folder is
    ``--data`` or the one the run recorded (for runs saved without their interpretation statistics)."""
    from attri_ssc.api import load_run
    from attri_ssc.runs import load_run as load_loaded

    data = args.data
    if data is None:
        recorded = load_loaded(args.run).data_dir
        data = Path(recorded) if recorded and Path(recorded).exists() else None
    run = load_run(args.run, data=data, device=args.device)
    if getattr(args, "layout", None):  # read the data folder in another layout than the run recorded
        run.config = dataclasses.replace(run.config, data=dataclasses.replace(run.config.data, layout=args.layout))
    return run


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

    check_png(args.out)
    if args.steps < 2:
        raise ConfigError(f"--steps must be >= 2, got {args.steps}")
    run = api_run(args)
    (a, label_a), (b, label_b) = api_item(run, args.case_a), api_item(run, args.case_b)
    frames = run.interpolate(a["image"], b["image"], steps=args.steps)
    interpolation_grid(frames.clamp(0, 1), interpolation_alphas(args.steps).tolist(), args.out,
                       title=f"{label_a} → {label_b} (Eq. 16)", inputs=(a["image"], b["image"]))
    print(f"interpolation {label_a} → {label_b} in {args.steps} steps → {args.out}")
    return 0


def _search_changes(recorded: dict | None) -> str:
    """``"; search KEY=VALUE, ..."`` for the feedback search's settings that differ from the defaults."""
    from attri_ssc.interpret.editing import FeedbackSettings

    if not recorded:
        return ""
    default = dataclasses.asdict(FeedbackSettings())
    changed = [f"{k}={v!r}" for k, v in recorded.items() if default.get(k) != v]
    return f"; search {', '.join(changed)}" if changed else ""


def _edit(args: argparse.Namespace) -> int:
    """Through the Python API (``Run.edit``), so the CLI, notebooks and the explorer edit alike."""
    import numpy as np

    from attri_ssc.api import save_npy
    from attri_ssc.interpret.editing import alpha_grid
    from attri_ssc.reports.figures import edit_strip

    check_png(args.out)
    check_quantile(args.quantile)
    search = feedback_settings(args.search)
    if args.search and args.rule != "feedback":
        raise ConfigError(f"--search sets the feedback rule's search; --rule is {args.rule}")
    if args.settings is not None:
        if args.case is not None or args.attribute is not None or args.search:
            raise ConfigError("--settings replays a saved edit: give no CASE, --attribute or --search with it")
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
        result = run.edit(item, args.attribute, alphas.tolist(), args.rule, hold, top_k=args.top_k,
                          active_only=args.active_only, exclusive=args.exclusive, saliency=True,
                          percentile=args.percentile, quantile=args.quantile, feedback=search)
    s = result.settings
    a = run.attribute_index(s.attribute)
    rule = (s.rule + (", holding " + ", ".join(s.hold) + " fixed" if s.hold else "")
            + (" (active only)" if s.active_only else "") + (" (exclusive atoms)" if s.exclusive else "")
            + _search_changes(s.feedback))
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
