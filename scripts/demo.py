"""`make demo`: the paper end to end on built-in phantoms, with a report.

Steps (each reused when its output exists, unless --force): generate phantoms → fetch
FID/LPIPS weights (optional) → train Attri-SSC-VAE (demo-2d) and its one-to-one ablation →
train the four baselines → evaluate every run → compare (Tables 1, 2, 4) → interpolate, edit
every supervised attribute, verify the default edit rule, correlations, sample →
runs/demo/report.{md,html}.

The steps form a dependency graph and run ``--jobs`` at a time (default: one per CPU core,
at most 2), each as its own single-thread process: the small demo model leaves most of a
2-thread process idle (two 1-thread trainings side by side gave 1.7x the throughput of one
2-thread training), so the Attri-SSC-VAE training runs beside the baselines' and the
evaluations beside the interpretation, whose edit verification is a step of its own. Each step's output goes to ``OUT/logs/STEP.log``.
The ten-rule edit comparison is its own command: ``attri-ssc compare-edit-rules``.

Usage: python scripts/demo.py [--out runs/demo] [--force] [--no-weights] [--quick] [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BASELINES = ("vae", "beta_vae", "ar_vae", "attri_vae")


@dataclass
class Step:
    """One CLI call of the demo: ``attri-ssc *command``, run after the steps named in ``after``;
    skipped when ``done`` (its output exists) unless --force.

    ``waits_for = (STEP, FILE)``: the step may also start before STEP has finished, as soon as STEP
    has written FILE in this demo (a file older than STEP's start is a previous demo's and does not
    count). The Attri-SSC-VAE training writes its Stage II checkpoint a Stage before it ends, and
    the one-to-one ablation, which starts from that checkpoint, runs beside the rest of it.
    """

    name: str
    command: list[str]
    after: tuple[str, ...] = ()
    done: bool = False
    always: bool = False  # rerun every time (cheap summaries of the other steps)
    threads: int = 1
    waits_for: tuple[str, Path] | None = None


@dataclass
class Running:
    step: Step
    process: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.perf_counter)


def demo_steps(args: argparse.Namespace, out: Path) -> list[Step]:
    """The demo's steps (2D phantoms), in the order they are preferred when several are ready:
    the longest chain (Attri-SSC-VAE training → one-to-one → ...) first."""
    data, weights, runs = out / "phantoms", out / "weights", out / "runs"
    common = [f"data.cache_dir={out / 'cache'}", "train.num_threads=1"]
    quick = ["stages.0.steps=30", "stages.1.steps=15", "stages.2.steps=15"] if args.quick else []
    quick_baseline = ["stages.0.steps=40"] if args.quick else []
    sets = lambda items: [x for item in items for x in ("--set", item)]  # noqa: E731
    weights_args = [] if args.no_weights else ["--weights", str(weights)]
    weight_dep = () if args.no_weights else ("weights",)

    steps = [Step("phantoms", ["generate-phantoms", str(data), "--n-cases", str(args.cases if not args.quick else 30),
                               "--seed", "0"], done=(data / "phantom_ground_truth.json").exists())]
    if not args.no_weights:
        steps.append(Step("weights", ["weights", "fetch", "--dir", str(weights)],
                          done=(weights / "manifest.json").exists()))
    ssc, one_to_one = runs / "attri_ssc", runs / "attri_ssc_one_to_one"
    steps.append(Step("train attri_ssc", ["train", "--data", str(data), "--config", "demo-2d", "--out", str(ssc),
                                          "--force", "--no-progress", *sets(common + quick)],
                      after=("phantoms",), done=(ssc / "model.json").exists()))
    # The edit verification is the longest part of the interpretation: it runs as its own step, beside
    # the rest, and the report reads it from figures/verification.
    # Its three attributes are verified in three processes (same numbers as one): beside the figures and the
    # evaluations they share both cores, so the verification no longer waits alone at the end.
    steps.append(Step("verify edits", ["verify-edits", str(ssc), "--out", str(out / "figures" / "verification"),
                                       "--jobs", "3"],
                      after=("train attri_ssc",), always=True))
    # The ablation starts from the Stage II checkpoint: it runs beside the main training's Stage III.
    stage2 = ssc / "checkpoints" / "after_stage2"
    steps.append(Step("train attri_ssc_one_to_one",
                      ["train", "--data", str(data), "--config", "demo-2d", "--out", str(one_to_one), "--force",
                       "--no-progress", "--init-from", str(stage2),
                       *sets(common + quick + ["train.one_to_one=true"])],
                      waits_for=("train attri_ssc", stage2.with_suffix(".json")),
                      done=(one_to_one / "model.json").exists()))
    steps.append(Step("interpret", ["interpret-all", str(ssc), "--out", str(out / "figures"), "--no-verification",
                                    *weights_args],
                      after=("train attri_ssc", *weight_dep), always=True))
    for family in BASELINES:
        run = runs / family
        steps.append(Step(f"train {family}", ["train", "--data", str(data), "--config", "baseline-2d", "--out",
                                              str(run), "--force", "--no-progress",
                                              *sets(common + quick_baseline + [f"train.family={family}"])],
                          after=("phantoms",), done=(run / "model.json").exists()))
    all_runs = [ssc, one_to_one, *(runs / f for f in BASELINES)]
    for run in all_runs:
        steps.append(Step(f"evaluate {run.name}", ["evaluate", str(run), "--no-progress", *weights_args],
                          after=(f"train {run.name}", *weight_dep), done=(run / "results.json").exists()))
    steps.append(Step("compare", ["compare", *map(str, all_runs), "--out", str(out / "tables")],
                      after=tuple(f"evaluate {r.name}" for r in all_runs), always=True))
    steps.append(Step("report", ["report", str(out), "--out", str(out)], after=("compare", "interpret", "verify edits"),
                      always=True))
    return steps


def run_steps(steps: list[Step], jobs: int, force: bool, logs: Path,
              program: tuple[str, ...] = (sys.executable, "-m", "attri_ssc")) -> dict[str, float]:
    """Run ``steps`` ``jobs`` at a time in dependency order; returns each run step's seconds.
    Each step runs ``*program, *step.command``.

    A failing step stops the demo: the others still running are terminated and the failing
    step's log tail is printed; raises ``SystemExit`` with its exit code.
    """
    names = {s.name for s in steps}
    for s in steps:
        missing = [a for a in s.after + ((s.waits_for[0],) if s.waits_for else ()) if a not in names]
        if missing:
            raise ValueError(f"step {s.name!r} waits for unknown steps {missing}")
    logs.mkdir(parents=True, exist_ok=True)
    finished: set[str] = set()
    started_at: dict[str, float] = {}  # wall clock (file times compare with it) of the steps started here
    timings: dict[str, float] = {}
    pending = list(steps)
    running: list[Running] = []

    def may_start(s: Step) -> bool:
        if not all(a in finished for a in s.after):
            return False
        if s.waits_for is None:
            return True
        producer, path = s.waits_for
        if producer not in started_at:  # not started, or skipped as done: then its file is from before
            return producer in finished and path.exists()
        if path.exists() and path.stat().st_mtime >= started_at[producer]:
            return True
        if producer in finished:
            raise ValueError(f"step {s.name!r} waits for {path}, which {producer!r} finished without writing")
        return False

    while pending or running:
        for s in list(pending):
            if s.done and not s.always and not force and may_start(s):
                print(f"[demo] {s.name}: done already (use --force to redo)", flush=True)
                finished.add(s.name)
                pending.remove(s)
        ready = [s for s in pending if may_start(s)]
        while ready and len(running) < jobs:
            s = ready.pop(0)
            pending.remove(s)
            log = logs / (s.name.replace(" ", "_") + ".log")
            env = {**os.environ, "OMP_NUM_THREADS": str(s.threads), "MKL_NUM_THREADS": str(s.threads)}
            print(f"[demo] {s.name}: attri-ssc {' '.join(s.command)}  (log: {log})", flush=True)
            started_at[s.name] = time.time()
            with open(log, "w") as fh:
                proc = subprocess.Popen([*program, *s.command], stdout=fh,
                                        stderr=subprocess.STDOUT, env=env)
            running.append(Running(s, proc, log))
        if not running and pending:
            raise ValueError(f"steps waiting on each other: {[s.name for s in pending]}")
        time.sleep(0.2)
        for r in list(running):
            code = r.process.poll()
            if code is None:
                continue
            running.remove(r)
            seconds = time.perf_counter() - r.started
            if code != 0:
                for other in running:
                    other.process.terminate()
                for other in running:
                    other.process.wait()
                tail = r.log.read_text(errors="replace").splitlines()[-30:]
                print(f"[demo] {r.step.name} failed (exit {code}) after {seconds:.0f} s; end of {r.log}:",
                      *tail, sep="\n", file=sys.stderr)
                raise SystemExit(code)
            timings[r.step.name] = seconds
            finished.add(r.step.name)
            print(f"[demo] {r.step.name}: finished in {seconds:.0f} s", flush=True)
    return timings


def _cli_path() -> str:
    """How to call ``attri-ssc`` from the current folder: the venv's script that runs this demo
    (``.venv/bin/attri-ssc`` under ``make demo``), or plain ``attri-ssc`` when it is not beside
    this interpreter."""
    script = Path(sys.executable).with_name("attri-ssc")
    if not script.exists():
        return "attri-ssc"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--force", action="store_true", help="redo every step")
    parser.add_argument("--no-weights", action="store_true", help="skip fetching FID/LPIPS weights")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (a pipeline check, not results)")
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="steps run at once, each single-threaded (default: CPU cores, at most 2)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps = demo_steps(args, out)
    report = next(s for s in steps if s.name == "report")
    steps.remove(report)
    timings = run_steps(steps, args.jobs, args.force, out / "logs")
    # Steps overlap, so the report gets the wall time (not the sum of the steps'); each step's own
    # seconds go to logs/step_timings.json.
    (out / "logs" / "step_timings.json").write_text(json.dumps({**timings, "jobs": args.jobs}, indent=1))
    (out / "timings.json").write_text(json.dumps(
        {f"all steps before the report ({args.jobs} at a time)": time.perf_counter() - started}, indent=1))
    report.after = ()
    run_steps([report], 1, args.force, out / "logs")
    total = time.perf_counter() - started
    print(f"[demo] finished in {total / 60:.1f} min with {args.jobs} parallel step(s); report: {out / 'report.html'}")
    summary = out / "summary.txt"
    if summary.exists():
        print(summary.read_text())
    cli = _cli_path()
    print(f"[demo] explore the model in a browser (then open http://127.0.0.1:8765):\n"
          f"  {cli} serve {out / 'runs' / 'attri_ssc'} --data {out / 'phantoms'}")
    print(f"[demo] compare the ten edit rules: {cli} compare-edit-rules {out / 'runs' / 'attri_ssc'} "
          f"--out {out / 'edit_rules'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
