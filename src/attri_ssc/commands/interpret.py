"""``attri-ssc correlations`` (Table 3), ``verify-edits`` (edits measured by the model-free
judge; the default rule unless told otherwise), ``compare-edit-rules`` (every rule variant
verified on the same images and ranked) and ``sample`` (images from a sparse prior over training codes, with MMD and FID).

The work happens in :mod:`attri_ssc.reports.interpretation`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attri_ssc.commands.edit import add_run_arguments, add_search_argument, check_png, check_quantile, feedback_settings
from attri_ssc.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("correlations", help="Table 3: attribute-pair correlations, atoms per attribute, W heatmap")
    add_run_arguments(p)
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--out", type=Path, required=True, help="folder for correlations.{json,md} and w_heatmap.png")
    p.set_defaults(func=_correlations)

    p = sub.add_parser("verify-edits", help="measure edits with the model-free judge: monotonicity and leakage")
    add_run_arguments(p)
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--n-images", type=int, default=24, help="held-out images to edit (default 24)")
    p.add_argument("--steps", type=int, default=9, help="α values in [-1, 1], odd (default 9)")
    p.add_argument("--top-k", type=int, default=None, help="atoms to edit (default: the run's train.top_k)")
    p.add_argument("--percentile", type=float, default=99.0, help="robust bound percentile (default 99)")
    p.add_argument("--quantile", type=float, default=0.9,
                   help="prototype and shift rules (plain and hold-fixed): average the training images beyond "
                        "this quantile (default 0.9)")
    p.add_argument("--variant", action="append", default=None, metavar="NAME",
                   help="verify this rule variant (repeatable; e.g. feedback, shift+conditional, literal); "
                        "default: the default rule (compare-edit-rules verifies them all)")
    add_search_argument(p)
    p.add_argument("--jobs", type=int, default=1,
                   help="processes verifying attributes side by side, one thread each (default 1; the numbers "
                        "are the same for any value)")
    p.add_argument("--out", type=Path, required=True, help="folder for edit_verification.{json,md}")
    p.set_defaults(func=_verify)

    p = sub.add_parser("compare-edit-rules", help="verify every edit rule variant on the same held-out images and "
                                                  "rank them → DIR/edit_rules.{json,md} + edit_verification.*")
    add_run_arguments(p)
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--n-images", type=int, default=24, help="held-out images to edit (default 24)")
    p.add_argument("--steps", type=int, default=9, help="α values in [-1, 1], odd (default 9)")
    p.add_argument("--top-k", type=int, default=None, help="atoms to edit (default: the run's train.top_k)")
    p.add_argument("--out", type=Path, required=True, help="folder for edit_rules.{json,md} and edit_verification.*")
    p.set_defaults(func=_compare_rules)

    p = sub.add_parser("sample", help="generate images from a sparse prior over training codes → PNG (+ JSON)")
    add_run_arguments(p)
    p.add_argument("-n", type=int, default=16, help="images in the grid (default 16)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the draws from the run's code prior (fitted once, with seed 0, on the training "
                        "codes and saved in RUN/interpretation.*)")
    p.add_argument("--split", choices=("val", "test"), default="test", help="held-out split for MMD/FID")
    p.add_argument("--weights", default=None, help="folder of attri-ssc weights fetch (FID)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write; metrics go to the same name .json")
    p.set_defaults(func=_sample)


def _correlations(args: argparse.Namespace) -> int:
    from attri_ssc.reports.interpretation import write_correlations
    from attri_ssc.runs import load_run_and_data

    run, bundle = load_run_and_data(args.run, args.data, args.device, layout=args.layout)
    print(write_correlations(run, bundle, args.split, args.out))
    print(f"written to {args.out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from attri_ssc.interpret.verification import VARIANTS
    from attri_ssc.reports.interpretation import write_verification
    from attri_ssc.runs import load_run_and_data

    if args.n_images < 2:
        raise ConfigError(f"--n-images must be >= 2, got {args.n_images}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    known = [v.name for v in VARIANTS]
    unknown = [v for v in args.variant or () if v not in known]
    if unknown:
        raise ConfigError(f"unknown --variant {', '.join(unknown)}; choose from: {', '.join(known)}")
    check_quantile(args.quantile)
    search = feedback_settings(args.search)
    run, bundle = load_run_and_data(args.run, args.data, args.device, layout=args.layout)
    print(write_verification(run, bundle, args.out, split=args.split, n_images=args.n_images, steps=args.steps,
                             top_k=args.top_k, percentile=args.percentile, quantile=args.quantile,
                             variants=None if args.variant is None else [v for v in VARIANTS if v.name in args.variant],
                             run_label=str(args.run), feedback_settings=search, jobs=args.jobs))
    print(f"written to {args.out}")
    return 0


def _compare_rules(args: argparse.Namespace) -> int:
    from attri_ssc.reports.interpretation import write_edit_rule_comparison
    from attri_ssc.runs import load_run_and_data

    if args.n_images < 2:
        raise ConfigError(f"--n-images must be >= 2, got {args.n_images}")
    run, bundle = load_run_and_data(args.run, args.data, args.device)
    print(write_edit_rule_comparison(run, bundle, args.out, split=args.split, n_images=args.n_images,
                                     steps=args.steps, top_k=args.top_k, run_label=str(args.run)))
    print(f"written to {args.out}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    """Through the Python API: the code prior ``Run.sample`` draws from (saved with the run), seeded by --seed."""
    from attri_ssc.commands.edit import api_run
    from attri_ssc.reports.interpretation import samples_line, write_samples

    check_png(args.out)
    if args.n < 1:
        raise ConfigError(f"-n must be >= 1, got {args.n}")
    run = api_run(args)
    metrics = write_samples(run, run.data_bundle(), args.out, n=args.n, seed=args.seed, split=args.split,
                            weights_dir=args.weights, prior=run.statistics.prior)
    print(samples_line(metrics, args.n, args.out))
    return 0
