"""Probe: the ``feedback`` edit rule's verification under other search settings.

Usage: python scripts/probes/feedback_settings.py RUN [--attribute lv_area ...] [--goal-sd 1.25]
       [--max-relative 0.5 | --no-cap] [--code-weight 5] [--image-weight 0] [--iterations 60]

Prints monotonicity / leakage as ``attri-ssc verify-edits RUN --variant feedback`` does (24 test
slices, 9 α values), for the attributes asked (default: cavity and myocardium).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attri_ssc.commands.interpret import _split, _top_k, attribute_units, load_run_and_data
from attri_ssc.interpret.editing import FeedbackSettings, run_atom_bounds
from attri_ssc.interpret.verification import EditVariant, held_out_images, judged_names, verify_edits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--attribute", action="append", default=None)
    parser.add_argument("--goal-sd", type=float, default=FeedbackSettings.goal_sd)
    parser.add_argument("--max-relative", type=float, default=FeedbackSettings.max_relative)
    parser.add_argument("--no-cap", action="store_true")
    parser.add_argument("--code-weight", type=float, default=FeedbackSettings.code_weight)
    parser.add_argument("--image-weight", type=float, default=FeedbackSettings.image_weight)
    parser.add_argument("--iterations", type=int, default=FeedbackSettings.iterations)
    args = parser.parse_args()
    run, bundle = load_run_and_data(args.run, None)
    names = list(run.attribute_names)
    spacing = float(run.config.data.spacing_mm)
    held, scale = held_out_images(_split(bundle, "test"), bundle.cases, spacing, 24)
    bounds = run_atom_bounds(run, bundle.train.images, bundle.train.case_ids, 99.0)
    settings = FeedbackSettings(goal_sd=args.goal_sd, max_relative=None if args.no_cap else args.max_relative,
                                code_weight=args.code_weight, image_weight=args.image_weight,
                                iterations=args.iterations)
    report = verify_edits(run.model, held, names, bounds, spacing, scale, _top_k(run, None),
                          variants=[EditVariant("feedback")], attributes=args.attribute or judged_names(names)[:2],
                          attribute_units=attribute_units(run, bundle), feedback_settings=settings)
    for attr, r in report["results"]["feedback"].items():
        print(f"{args.run} {settings}: {attr} monotonicity {r['monotonicity']:.3f} leakage {r['leakage']:.3f} "
              f"change {r['target_change_per_unit_alpha_range']:.2f}")
        print("   per image", " ".join(f"{v:.1f}" for v in r["per_image_monotonicity"] if v is not None))


if __name__ == "__main__":
    main()
