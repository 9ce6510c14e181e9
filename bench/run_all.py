"""Run every benchmark of bench/ in sequence; print their JSON lines; write bench/results.json.

Each script runs in its own process (so peak RSS is per measurement), one after the other,
with a time limit. The default set fits in about five minutes on the 2-core CPU machine;
the ``paper`` 3D step (minutes per step on a CPU) only runs with ``--paper-3d``.

OpenMP threads: on a shared machine, OpenMP's default of spinning while it waits makes a
2-thread step several times slower (bench/README.md); the children get
``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it, and one ``small`` step
measurement runs without it to show the difference.

Usage: ``python bench/run_all.py [--paper-3d] [--size3d 64] [--only lista data ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"


def jobs(args) -> list[tuple[str, list[str], int, dict[str, str | None]]]:
    """(name, script arguments, time limit in s, environment changes) in run order."""
    out = [
        ("lista", ["bench_lista.py", "--rounds", "5", "--repeats", "5"], 450, {}),
        ("data", ["bench_data.py", "--sizes", "5", "10", "20"], 180, {}),
        ("small", ["bench_train_step.py", "--preset", "small", "--rounds", "5", "--compare-adam"], 120, {}),
        ("small_before", ["bench_train_step.py", "--preset", "small", "--rounds", "5", "--variant", "before",
                          "--no-conv-rate"], 120, {}),
        ("small_omp_default", ["bench_train_step.py", "--preset", "small", "--rounds", "3", "--no-conv-rate"], 90,
         {"OMP_WAIT_POLICY": None}),
        ("paper2d_adam_omp_default", ["bench_train_step.py", "--preset", "paper2d", "--rounds", "3",
                                      "--compare-adam-only"], 120, {"OMP_WAIT_POLICY": None}),
        ("small_channels_last", ["bench_train_step.py", "--preset", "small", "--rounds", "5",
                                 "--compare-channels-last"], 120, {}),
        ("memory", ["bench_train_step.py", "--preset", "paper3d", "--size", "80", "--memory-model"], 60, {}),
        ("memory2d", ["bench_train_step.py", "--preset", "paper2d", "--memory-model"], 60, {}),
        ("paper2d", ["bench_train_step.py", "--preset", "paper2d", "--rounds", "2", "--compare-adam"], 300, {}),
        # the explorer (attri-ssc serve) on the demo model, or a smoke run when there is none
        ("serve", ["bench_serve.py"], 900, {}),
    ]
    if args.paper_3d:
        out.append(("paper3d", ["bench_train_step.py", "--preset", "paper3d", "--size", str(args.size3d),
                                "--rounds", "1", "--no-conv-rate"], 3600, {}))
    if args.only:
        out = [j for j in out if j[0] in args.only]
    return out


def run_job(name: str, argv: list[str], limit: int, env_changes: dict[str, str | None], threads: int
            ) -> tuple[list[dict], dict]:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    cmd = [sys.executable, str(HERE / argv[0]), *argv[1:]] + (["--threads", str(threads)] if threads else [])
    records: list[dict] = []
    start = time.perf_counter()
    status = "ok"
    proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        status = f"timed out after {limit} s (skipped; run it alone: {' '.join(argv)})"
    if status == "ok" and proc.returncode != 0:
        status = f"failed with exit code {proc.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}"
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            record = json.loads(line)
            record["job"] = name
            record["omp_wait_policy"] = env.get("OMP_WAIT_POLICY", "unset")
            records.append(record)
            print(json.dumps(record), flush=True)
    meta = {"job": name, "command": " ".join(["python", f"bench/{argv[0]}", *argv[1:]]),
            "seconds": round(time.perf_counter() - start, 1), "status": status,
            "omp_wait_policy": env.get("OMP_WAIT_POLICY", "unset")}
    print(json.dumps({"bench": "job", **meta, "load": [round(x, 2) for x in os.getloadavg()]}), flush=True)
    return records, meta


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper-3d", action="store_true",
                        help="also time one step of the paper 3D preset on 1x1xS^3 (minutes per step on a CPU)")
    parser.add_argument("--size3d", type=int, default=64, help="S for --paper-3d (64 or 80)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in every job (0: torch's default)")
    parser.add_argument("--only", nargs="+", default=None, help="job names to run (see jobs())")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    started = time.perf_counter()
    all_records, all_jobs = [], []
    for name, argv, limit, env_changes in jobs(args):
        records, meta = run_job(name, argv, limit, env_changes, args.threads)
        all_records += records
        all_jobs.append(meta)
    if not args.paper_3d:
        print(json.dumps({"bench": "note", "skipped": "paper3d train step",
                          "why": "minutes per step on this CPU; run `python bench/run_all.py --paper-3d`"}))
    import torch

    summary = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.perf_counter() - started, 1),
               "machine": {"platform": platform.platform(), "processor": platform.processor(),
                           "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                           "load_at_end": [round(x, 2) for x in os.getloadavg()]},
               "jobs": all_jobs, "records": all_records}
    Path(args.output).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({"bench": "done", "seconds": summary["seconds"], "results": str(args.output)}), flush=True)
    return 0 if all(j["status"] == "ok" for j in all_jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
