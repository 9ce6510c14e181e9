"""``attri-ssc interpolate`` (Eq. 16) and ``attri-ssc edit`` (A.5's edit strip with saliency, Figure 3).

CASE is a case id (``P012``), optionally ``P012:4`` for slice 4 of a 2D run; without a
slice, the middle slice containing myocardium (3D runs: the case's volume). Cases may come
from any split. The work happens in :mod:`attri_ssc.reports.interpretation`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attri_ssc.errors import ConfigError


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """RUN, --data and --device, shared by the interpretation commands."""
    p.add_argument("run", type=Path, help="run folder written by attri-ssc train")
    p.add_argument("--data", type=Path, default=None, help="data folder (default: the one the run used)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def check_png(path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--out must name a .png file, got {path}")


def check_quantile(quantile: float) -> None:
    if not 0.5 < quantile < 1.0:
        raise ConfigError(f"--quantile must be in (0.5, 1), got {quantile}")


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


def _interpolate(args: argparse.Namespace) -> int:
    from attri_ssc.reports.interpretation import write_interpolation
    from attri_ssc.runs import load_run_and_data

    check_png(args.out)
    if args.steps < 2:
        raise ConfigError(f"--steps must be >= 2, got {args.steps}")
    run, bundle = load_run_and_data(args.run, args.data, args.device)
    print(write_interpolation(run, bundle, args.case_a, args.case_b, args.steps, args.out))
    return 0


def _edit(args: argparse.Namespace) -> int:
    from attri_ssc.interpret.editing import alpha_grid
    from attri_ssc.reports.interpretation import write_edit
    from attri_ssc.runs import load_run_and_data

    check_png(args.out)
    check_quantile(args.quantile)
    try:
        alphas = alpha_grid(args.steps)
    except ValueError as exc:
        raise ConfigError(f"--steps: {exc}") from None
    run, bundle = load_run_and_data(args.run, args.data, args.device)
    print(write_edit(run, bundle, args.case, args.attribute, args.out, rule=args.rule, alphas=alphas,
                     quantile=args.quantile, hold_fixed=args.hold_fixed, active_only=args.active_only,
                     exclusive=args.exclusive, top_k=args.top_k, percentile=args.percentile))
    return 0
