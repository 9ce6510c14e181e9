"""The γ sweep of Table 5: train and evaluate one run per (γ, seed) (``attri-ssc sweep``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from attri_ssc.config import load_config
from attri_ssc.evaluation.evaluate import evaluate_run
from attri_ssc.training.trainer import train

__all__ = ["sweep_run_dir", "run_sweep"]


def sweep_run_dir(out: Path, gamma: float, seed: int) -> Path:
    """``out/gamma{γ}_seed{seed}``: the run folder of one setting."""
    return Path(out) / f"gamma{gamma:g}_seed{seed}"


def run_sweep(data_dir: Path, out: Path, config: str = "demo-2d",
              gammas: Sequence[float] = (0.0, 0.1, 1.0, 5.0, 10.0, 100.0),
              seeds: Sequence[int] = (0,), overrides: Sequence[str] = (), weights_dir: str | None = None,
              force: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> list[Path]:
    """Train (stages 2 and 3 with ``γ``) and evaluate one run per setting; a setting whose
    ``results.json`` exists is kept unless ``force``. Returns the run folders."""
    runs = []
    for seed in seeds:
        for gamma in gammas:
            run = sweep_run_dir(out, gamma, seed)
            runs.append(run)
            if (run / "results.json").exists() and not force:
                log(f"{run}: done already (use --force to redo)")
                continue
            cfg = load_config(config, [*overrides, f"train.seed={seed}",
                                       f"stages.1.gamma={gamma}", f"stages.2.gamma={gamma}"])
            train(cfg, data_dir, run, force=True, progress=progress)
            evaluate_run(run, data_dir, weights_dir=weights_dir, progress=progress)
            log(f"{run}: trained and evaluated")
    return runs
