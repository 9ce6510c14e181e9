"""TensorBoard logging of training (``train.tensorboard``), read back with TensorBoard's EventAccumulator
and checked against the run's own ``metrics.jsonl``."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from attri_ssc.errors import ConfigError


@pytest.fixture(scope="module")
def board_run(phantom_dir, tmp_path_factory):
    from attri_ssc.config import load_config
    from attri_ssc.training.trainer import train

    root = tmp_path_factory.mktemp("tensorboard")
    cfg = load_config("smoke", ["train.tensorboard=true", "train.num_threads=1", "train.log_every=2",
                                f"data.cache_dir={root / 'cache'}"])
    train(cfg, phantom_dir, root / "run", progress=False)
    return root / "run"


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_scalars_equal_the_metrics_log(board_run):
    acc = _events(board_run)
    records = [json.loads(line) for line in (board_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    vals = [r for r in records if r["kind"] == "val"]
    tags = set(acc.Tags()["scalars"])
    keys = {k for r in steps for k, v in r.items() if isinstance(v, float) and k not in ("step", "global_step")}
    assert {"total", "recon", "density", "live_atoms", "lr"} <= keys
    for key in keys:  # every loss term, statistic and learning rate of the JSON log
        logged = {e.step: e.value for e in acc.Scalars(f"train/{key}")}
        want = {r["global_step"]: r[key] for r in steps if key in r}
        assert sorted(logged) == sorted(want)
        np.testing.assert_allclose([logged[g] for g in sorted(want)], [want[g] for g in sorted(want)], rtol=1e-6)
    assert {"train/total", "train/density", "train/live_atoms", "train/lr"} <= tags
    assert vals and "val/psnr" in tags
    psnr = {e.step: e.value for e in acc.Scalars("val/psnr")}
    np.testing.assert_allclose([psnr[v["global_step"]] for v in vals], [v["psnr"] for v in vals], rtol=1e-6)
    # the live atoms are a count of the dictionary's atoms
    assert all(0 <= e.value <= 16 for e in acc.Scalars("train/live_atoms"))


def test_reconstruction_grid_shows_inputs_over_reconstructions(board_run):
    acc = _events(board_run)
    assert "val/reconstructions" in acc.Tags()["images"]
    events = acc.Images("val/reconstructions")
    assert len(events) == 3  # one per stage end
    from attri_ssc.training.tensorboard import GRID_IMAGES

    n = min(GRID_IMAGES, 8)
    assert events[-1].height == 2 * 16 and events[-1].width <= n * 16 and events[-1].width % 16 == 0


def test_grid_layout_against_its_inputs():
    from attri_ssc.training.tensorboard import reconstruction_grid

    x = torch.rand(3, 1, 4, 5)
    y = torch.rand(3, 1, 4, 5)
    g = reconstruction_grid(x, y)
    assert g.shape == (1, 8, 15)
    assert torch.equal(g[0, :4, 5:10], x[1, 0]) and torch.equal(g[0, 4:, 10:15], y[2, 0])
    vol = torch.rand(2, 1, 6, 4, 4)
    assert torch.equal(reconstruction_grid(vol, vol)[0, :4, :4], vol[0, 0, 3])


def test_missing_tensorboard_names_the_extra(monkeypatch, phantom_dir, tmp_path):
    from attri_ssc.config import load_config
    from attri_ssc.training.trainer import train

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    cfg = load_config("smoke", ["train.tensorboard=true"])
    with pytest.raises(ConfigError, match=r"attri-ssc\[tensorboard\]"):
        train(cfg, phantom_dir, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
