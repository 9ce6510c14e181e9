"""``attri-ssc train``: train Attri-SSC-VAE (or a baseline) through the curriculum."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from attri_ssc.commands.data_options import add_layout_argument

    p = sub.add_parser("train", help="train a model on a data folder (EMIDEC, ACDC or manifest layout)",
                       description="Train Attri-SSC-VAE through the three-stage curriculum, or a baseline "
                                   "(--set train.family=attri_vae ...). Works under torchrun.")
    p.add_argument("--data", required=True, type=Path, help="data folder (EMIDEC, ACDC or manifest layout)")
    add_layout_argument(p)
    p.add_argument("--config", default="demo-2d", help="preset name or YAML file (default: demo-2d)")
    p.add_argument("--out", required=True, type=Path, help="run folder to create")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.batch_size=8 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    p.add_argument("--init-from", type=Path, default=None, metavar="CHECKPOINT",
                   help="start from another run's stage-boundary checkpoint, e.g. RUN/checkpoints/after_stage2 "
                        "(earlier stages count as done)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attri_ssc.config import ExperimentConfig, apply_overrides, load_config
    from attri_ssc.errors import DataError
    from attri_ssc.training.trainer import CHECKPOINT_NAME, train

    if not args.data.exists():
        raise DataError(f"data folder not found: {args.data}")
    if args.layout:
        args.overrides = [*args.overrides, f"data.layout={args.layout}"]
    if args.resume:
        from attri_ssc.checkpoint import load_checkpoint

        _, meta = load_checkpoint(args.out / CHECKPOINT_NAME)
        cfg = ExperimentConfig.from_dict(apply_overrides(meta["config"], args.overrides))
    else:
        cfg = load_config(args.config, args.overrides)
    result = train(cfg, args.data, args.out, resume=args.resume, force=args.force, progress=not args.no_progress,
                   init_from=args.init_from)
    if result.completed and cfg.train.family == "attri_ssc" and int(os.environ.get("RANK", "0")) == 0:
        save_interpretation_statistics(result.run_dir, args.data)
    state = "finished" if result.completed else f"stopped at global step {result.position.global_step}"
    print(f"training {state}; run folder: {result.run_dir}")
    if result.skipped_batches:
        print(f"attri-ssc train: warning: {result.skipped_batches} batch(es) with a non-finite loss or gradient "
              f"were skipped (train.skip_nonfinite); see {result.run_dir / 'metrics.jsonl'}", file=sys.stderr)
    return 0


def save_interpretation_statistics(run_dir: Path, data_dir: Path) -> None:
    """``RUN/interpretation.{safetensors,json}``: what editing and sampling need from the training
    split (bounds, prototypes, calibration, attribute ranges, code prior), so that
    ``attri_ssc.load_run(RUN)`` alone suffices (the training layer does not import ``interpret``)."""
    from attri_ssc.api import load_run
    from attri_ssc.errors import AttriSSCError

    try:
        load_run(run_dir, data=data_dir).statistics  # computed from the training split, saved in the run folder
    except (AttriSSCError, ValueError) as exc:  # e.g. a training split too small for the code prior
        print(f"attri-ssc train: warning: the model is saved, but not the statistics that editing and sampling "
              f"need ({run_dir / 'interpretation.json'}): {exc}", file=sys.stderr)
        return
    if not (run_dir / "interpretation.json").is_file():  # the folder refused the write (read-only, full disk)
        print(f"attri-ssc train: warning: could not write {run_dir / 'interpretation.json'}; "
              f"attri_ssc.load_run(RUN, data=DIR) computes it when needed", file=sys.stderr)
