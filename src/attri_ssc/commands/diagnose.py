"""``attri-ssc diagnose usage RUN``: how much of each attribute the atom usages hold, read out
by W and by other readers fitted on the same usages, against model-free ceilings.

The work happens in :mod:`attri_ssc.interpret.diagnose`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("diagnose", help="diagnose a trained run (usage readout and its ceilings)",
                            description="Diagnostics of a trained Attri-SSC-VAE run.")
    actions = parser.add_subparsers(dest="diagnose_command", metavar="WHAT", required=True)
    p = actions.add_parser(
        "usage", help="held-out ρ of readers of the atom usages K·ũ (W, ridge, kernel ridge, boosted trees) "
                      "and of model-free ceilings",
        description="Fit readers on the training split's atom usages K·ũ (the mapper's only input), score them "
                    "on the test split (Spearman ρ per attribute), next to the model's own â and readers that "
                    "bypass the usages (2D: the model-free judge; the in-plane ground truth). Prints a Markdown "
                    "table.")
    p.add_argument("run", type=Path, help="run folder written by attri-ssc train")
    p.add_argument("--data", type=Path, default=None, help="data folder (default: the one the run used)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME",
                   help="score RUN/checkpoints/NAME, e.g. after_stage1 (repeatable; 'final' is RUN/model, "
                        "the default)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the numbers as JSON")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=_usage)


def _usage(args: argparse.Namespace) -> int:
    from attri_ssc.interpret.diagnose import usage_markdown, usage_readout
    from attri_ssc.io_utils import write_json
    from attri_ssc.runs import load_run_and_data

    run, bundle = load_run_and_data(args.run, args.data, args.device)
    result = usage_readout(run, bundle, args.checkpoint or ["final"])
    print(usage_markdown(result))
    if args.json is not None:
        write_json(args.json, {"run": str(args.run), **result})
        print(f"\nwritten to {args.json}")
    return 0
