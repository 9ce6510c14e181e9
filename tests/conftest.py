"""Shared test fixtures: tiny model configs and seeding. Keep this file small."""

from __future__ import annotations

import pytest
import torch

from attri_ssc.models.config import ModelConfig, preset
from attri_ssc.seeding import set_seed


# Tests run two pytest workers on two cores: one intra-op thread each. Tiny tensors are
# also many times faster single-threaded on a loaded machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same RNG state (Python, NumPy, torch)."""
    set_seed(0)


@pytest.fixture
def tiny_config():
    """Factory: ``tiny_config(spatial_dims=2, **overrides) -> ModelConfig`` (16^d input, K = 16)."""

    def make(spatial_dims: int = 2, **overrides) -> ModelConfig:
        return preset("tiny", spatial_dims=spatial_dims, **overrides)

    return make



@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory):
    """Six small phantom cases (2 N, 4 P; seed 123) in EMIDEC layout, generated once.

    Read-only for tests: copy it (shutil.copytree) before breaking anything.
    """
    from attri_ssc.data.phantoms import generate_phantoms

    root = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(root, 6, seed=123)
    return root


@pytest.fixture(scope="session")
def smoke_run(phantom_dir, tmp_path_factory):
    """A trained Attri-SSC-VAE run folder (Path) shared by the API, explorer and docs tests.

    ``attri-ssc train --config smoke`` (18 steps) on ``phantom_dir``, through the command so the run
    folder carries what the train command writes (``interpretation.*`` for ``attri_ssc.load_run``),
    supervising the demo's attributes (lv_area, myo_area, wall_thickness, infarct_area) on 32×32
    slices at 4 mm, where the model-free judge can measure. Read-only for tests: copy it
    (shutil.copytree) before changing anything. (test_interpret_cli.py has its own module fixture
    of the same name.)
    """
    from attri_ssc.cli import main

    root = tmp_path_factory.mktemp("smoke-run")
    argv = ["train", "--data", str(phantom_dir), "--config", "smoke", "--out", str(root / "attri_ssc"), "--no-progress",
            "--set", "data.attributes=[lv_area, myo_area, wall_thickness, infarct_area]",
            "--set", "data.spacing_mm=4.0", "--set", "model.input_size=32", "--set", "train.num_threads=1",
            "--set", f"data.cache_dir={root / 'cache'}"]
    assert main(argv) == 0
    return root / "attri_ssc"
