"""``attri-ssc interpret-all`` (every figure of Section 4.2 for one run) and ``attri-ssc report``.

The work happens in :func:`attri_ssc.reports.interpretation.interpret_all` and
:func:`attri_ssc.reports.report.build_report`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from attri_ssc.commands.data_options import add_layout_argument

    p = sub.add_parser("interpret-all", help="interpolation, an edit strip per attribute, edit verification, "
                                             "correlations and samples for one run → DIR/interpret.json + PNGs")
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, required=True, help="figure folder")
    p.add_argument("--data", type=Path, default=None)
    add_layout_argument(p)
    p.add_argument("--weights", default=None, help="folder of attri-ssc weights fetch (sample FID)")
    p.add_argument("--n-images", type=int, default=24, help="held-out images for edit verification")
    p.add_argument("--no-verification", action="store_true",
                   help="skip the edit verification (run `attri-ssc verify-edits RUN --out DIR/verification` "
                        "beside it; the report reads it from there)")
    p.set_defaults(func=_interpret_all)

    p = sub.add_parser("report", help="render a demo folder into report.md and report.html")
    p.add_argument("demo_dir", type=Path, help="folder written by scripts/demo.py (runs/, tables/, figures/)")
    p.add_argument("--out", type=Path, default=None, help="where report.{md,html} go (default: DEMO_DIR)")
    p.set_defaults(func=_report)


def _interpret_all(args: argparse.Namespace) -> int:
    from attri_ssc.errors import ConfigError
    from attri_ssc.reports.interpretation import interpret_all

    if args.n_images < 2:
        raise ConfigError(f"--n-images must be >= 2, got {args.n_images}")
    interpret_all(args.run, args.out, args.data, args.weights, args.n_images, layout=args.layout,
                  verification=not args.no_verification)
    print(f"interpretation figures in {args.out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from attri_ssc.reports.report import build_report

    md, html_path, summary = build_report(args.demo_dir, args.out)
    print("\n".join(summary))
    print(f"report: {html_path} (and {md})")
    return 0
