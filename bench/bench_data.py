"""The data pipeline: reading and preprocessing EMIDEC-layout NIfTI, cold and cached, and
the share of an epoch the trainer spends waiting for batches.

Phantoms are generated into a temporary folder and their ``phantom_clean`` folder is
removed, so the folder holds exactly what a real EMIDEC download holds (image, contours,
clinical text per case). Measured per dataset size (``--sizes``, cases):

* ``read``: nibabel reads of every image and mask (no preprocessing): cases/s;
* ``cold``: :func:`attri_ssc.data.datasets.build_datasets` with an empty cache folder
  (read, measure attributes, resample, crop, scale, write the cache, split): cases/s;
* ``cached``: the same call again (content hashes of the files, cache hits): cases/s;
* ``epoch``: one epoch of the demo's training (``small`` preset, 64×64, batch 4, the
  trainer's ``BatchSchedule`` and ``to_device``): seconds, steps, the fraction of the
  epoch spent assembling batches (``data_wait_fraction``, target <= 0.05), and the
  cached build time relative to the epoch.

Usage: ``python bench/bench_data.py [--sizes 6 12 24] [--threads 1]``; prints JSON lines.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

import _common as C
from attri_ssc.data.config import DataConfig
from attri_ssc.data.datasets import build_datasets
from attri_ssc.data.emidec import CLEAN_DIRNAME, read_dataset
from attri_ssc.data.phantoms import generate_phantoms
from attri_ssc.training.distributed import DistInfo
from attri_ssc.training.trainer import BatchSchedule, to_device


def bench_size(root: Path, n_cases: int, epoch: bool) -> dict:
    data = root / f"cases{n_cases}"
    t0 = time.perf_counter()
    generate_phantoms(data, n_cases=n_cases, seed=0)
    gen_s = time.perf_counter() - t0
    shutil.rmtree(data / CLEAN_DIRNAME)  # exactly the EMIDEC layout

    cases = read_dataset(data)
    t0 = time.perf_counter()
    n_slices = 0
    for case in cases:
        n_slices += case.load_image().shape[2]
        case.load_mask()
    read_s = time.perf_counter() - t0

    cfg = DataConfig(cache_dir=str(root / f"cache{n_cases}"))  # the demo's geometry: 64x64 at 2 mm
    t0 = time.perf_counter()
    bundle = build_datasets(data, cfg, seed=0)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bundle = build_datasets(data, cfg, seed=0)
    cached_s = time.perf_counter() - t0
    record = {"bench": "data", "cases": n_cases, "slices": n_slices, "train_items": len(bundle.train),
              "generate_s": round(gen_s, 2),
              "read_cases_per_s": round(n_cases / read_s, 1), "cold_cases_per_s": round(n_cases / cold_s, 1),
              "cached_cases_per_s": round(n_cases / cached_s, 1), "cold_s": round(cold_s, 2),
              "cached_s": round(cached_s, 3), "image_size": cfg.image_size}
    if epoch:
        record.update(run_epoch(bundle, cached_s))
    return C.emit(record)


def run_epoch(bundle, build_s: float) -> dict:
    """One epoch of the small preset with the trainer's batch assembly; times data vs compute."""
    from bench_train_step import Step, model_config

    mcfg, batch = model_config("small", bundle.config.image_size)
    step = Step(mcfg, batch, torch.device("cpu"), "fused", "fp32", False)
    schedule = BatchSchedule(bundle.train, batch, seed=0, info=DistInfo())
    step.batch = to_device(schedule.batch(0), torch.device("cpu"), False)
    step()  # warm-up (allocations, optimiser state)
    data_s = compute_s = 0.0
    for g in range(schedule.per_epoch):
        t0 = time.perf_counter()
        step.batch = to_device(schedule.batch(g), torch.device("cpu"), False)
        t1 = time.perf_counter()
        step()
        t2 = time.perf_counter()
        data_s += t1 - t0
        compute_s += t2 - t1
    epoch_s = data_s + compute_s
    return {"epoch_steps": schedule.per_epoch, "epoch_s": round(epoch_s, 2),
            "ms_per_step": round(1e3 * compute_s / schedule.per_epoch, 1),
            "data_wait_fraction": round(data_s / epoch_s, 5), "target": 0.05,
            "data_ms_per_step": round(1e3 * data_s / schedule.per_epoch, 3),
            "cached_build_over_epoch": round(build_s / epoch_s, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[6, 12, 24])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-epoch", action="store_true", help="skip the training epochs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="attri-ssc-bench-") as tmp:
        records = [bench_size(Path(tmp), n, not args.no_epoch) for n in args.sizes]
    if len(records) >= 2 and not args.no_epoch:
        scaling(records)


def scaling(records: list[dict]) -> None:
    """Least-squares line through (cases, seconds) for the epoch and the cold/cached builds;
    extrapolated to EMIDEC's 100 training cases (linear: every case adds its slices)."""
    import numpy as np

    n = np.array([r["cases"] for r in records], dtype=float)
    out = {"bench": "data_scaling", "sizes": [int(x) for x in n], "how": "least-squares line, extrapolated"}
    for key in ("epoch_s", "cold_s", "cached_s"):
        y = np.array([r[key] for r in records], dtype=float)
        slope, intercept = np.polyfit(n, y, 1)
        out[f"{key}_per_case"] = round(float(slope), 4)
        out[f"{key}_intercept"] = round(float(intercept), 3)
        out[f"{key}_at_100_cases"] = round(float(slope * 100 + intercept), 1)
    C.emit(out)


if __name__ == "__main__":
    main()
