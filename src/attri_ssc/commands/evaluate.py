"""``attri-ssc evaluate``, ``compare`` and ``sweep``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from attri_ssc.commands.data_options import add_layout_argument

    p = sub.add_parser("evaluate", help="metrics of a trained run on its test split → RUN/results.json")
    p.add_argument("run", type=Path, help="run folder written by attri-ssc train")
    p.add_argument("--data", type=Path, default=None, help="data folder (default: the one the run used)")
    add_layout_argument(p)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--weights", default=None, help="folder of attri-ssc weights fetch (FID/LPIPS)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("compare", help="tables like the paper's Tables 1, 2, 4, 5 from evaluated runs")
    p.add_argument("runs", nargs="+", type=Path, help="evaluated run folders")
    p.add_argument("--out", required=True, type=Path, help="folder for table*.md / table*.csv")
    p.set_defaults(func=_compare)

    p = sub.add_parser("sweep", help="train and evaluate one run per γ (Table 5) and seed")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--config", default="demo-2d")
    p.add_argument("--out", required=True, type=Path, help="folder holding one run folder per setting")
    p.add_argument("--gammas", nargs="+", type=float, default=[0.0, 0.1, 1.0, 5.0, 10.0, 100.0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--weights", default=None)
    p.add_argument("--force", action="store_true", help="retrain settings whose run folder exists")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_sweep)


def _evaluate(args: argparse.Namespace) -> int:
    from attri_ssc.evaluation.evaluate import evaluate_run

    results = evaluate_run(args.run, args.data, args.split, args.weights, progress=not args.no_progress,
                           layout=args.layout)
    rec = results["reconstruction"]
    mmd = "skipped" if rec["mmd_x100"] is None else f"{rec['mmd_x100']:.3f}"
    ssim = "skipped" if rec["ssim_mean"] is None else f"{rec['ssim_mean']:.4f}"
    print(f"{args.run}: PSNR {rec['psnr_mean']:.2f} dB, SSIM {ssim}, "
          f"MMD×10² {mmd} on {results['n_samples']} {args.split} samples "
          f"→ {args.run / 'results.json'}")
    for metric, why in results.get("skipped", {}).items():
        print(f"  skipped {metric}: {why}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from attri_ssc.evaluation.compare import compare_runs

    tables = compare_runs(args.runs, args.out)
    for markdown in tables.values():
        print(markdown)
    print(f"tables written to {args.out}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from attri_ssc.evaluation.sweep import run_sweep

    run_sweep(args.data, args.out, args.config, args.gammas, args.seeds, args.overrides, args.weights,
              force=args.force, progress=not args.no_progress)
    return 0
