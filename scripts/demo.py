"""`make demo`: the paper end to end on built-in phantoms, with a report.

Steps (each reused when its output exists, unless --force): generate phantoms → fetch
FID/LPIPS weights (optional) → train Attri-SSC-VAE (demo-2d) → train the four baselines →
evaluate every run → compare (Tables 1, 2, 4) → interpolate, edit every supervised
attribute, verify edits, correlations, sample → runs/demo/report.{md,html}.

Usage: python scripts/demo.py [--out runs/demo] [--force] [--no-weights] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BASELINES = ("vae", "beta_vae", "ar_vae", "attri_vae")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--force", action="store_true", help="redo every step")
    parser.add_argument("--no-weights", action="store_true", help="skip fetching FID/LPIPS weights")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (a pipeline check, not results)")
    parser.add_argument("--cases", type=int, default=100)
    args = parser.parse_args()

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / "phantoms"
    weights = out / "weights"
    runs = out / "runs"
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, done: bool, command: list[str]) -> None:
        if done and not args.force:
            print(f"[demo] {name}: done already (use --force to redo)")
            return
        print(f"[demo] {name}: {' '.join(command)}", flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "attri_ssc", *command], check=True)
        timings[name] = time.perf_counter() - t0

    common = [f"data.cache_dir={out / 'cache'}"]
    quick = ["stages.0.steps=30", "stages.1.steps=15", "stages.2.steps=15"] if args.quick else []
    quick_baseline = ["stages.0.steps=40"] if args.quick else []
    sets = lambda items: [x for item in items for x in ("--set", item)]  # noqa: E731

    step("phantoms", (data / "phantom_ground_truth.json").exists(),
         ["generate-phantoms", str(data), "--n-cases", str(args.cases if not args.quick else 30), "--seed", "0"])
    if not args.no_weights:
        step("weights", (weights / "manifest.json").exists(), ["weights", "fetch", "--dir", str(weights)])
    weights_args = [] if args.no_weights else ["--weights", str(weights)]

    ssc = runs / "attri_ssc"
    step("train attri-ssc", (ssc / "model.json").exists(),
         ["train", "--data", str(data), "--config", "demo-2d", "--out", str(ssc), "--force", *sets(common + quick)])
    one_to_one = runs / "attri_ssc_one_to_one"
    step("train attri-ssc one-to-one from Stage II (Table 4)", (one_to_one / "model.json").exists(),
         ["train", "--data", str(data), "--config", "demo-2d", "--out", str(one_to_one), "--force",
          "--init-from", str(ssc / "checkpoints" / "after_stage2"),
          *sets(common + quick + ["train.one_to_one=true"])])
    for family in BASELINES:
        run = runs / family
        step(f"train {family}", (run / "model.json").exists(),
             ["train", "--data", str(data), "--config", "baseline-2d", "--out", str(run), "--force",
              *sets(common + quick_baseline + [f"train.family={family}"])])
    all_runs = [ssc, one_to_one, *(runs / f for f in BASELINES)]
    for run in all_runs:
        step(f"evaluate {run.name}", (run / "results.json").exists(),
             ["evaluate", str(run), "--no-progress", *weights_args])
    step("compare", False, ["compare", *map(str, all_runs), "--out", str(out / "tables")])

    def save_timings() -> None:
        previous = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}
        (out / "timings.json").write_text(json.dumps({**previous, **timings}, indent=1))

    figures = out / "figures"
    step("interpret", False, ["interpret-all", str(ssc), "--out", str(figures), *weights_args])
    save_timings()
    step("report", False, ["report", str(out), "--out", str(out)])
    save_timings()
    total = time.perf_counter() - started
    print(f"[demo] finished in {total / 60:.1f} min; report: {out / 'report.html'}")
    summary = out / "summary.txt"
    if summary.exists():
        print(summary.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
