"""evaluate / sweep / compare through the CLI on tiny smoke runs."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attri_ssc.cli import main
from attri_ssc.evaluation.predict import code_statistics


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    from attri_ssc.data.phantoms import generate_phantoms

    root = tmp_path_factory.mktemp("eval_phantoms")
    generate_phantoms(root, n_cases=10, seed=5)
    return root


def test_sweep_then_compare_writes_table5_with_one_row_per_gamma(phantoms, tmp_path):
    out = tmp_path / "sweep"
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    assert main(["sweep", "--data", str(phantoms), "--config", "smoke", "--out", str(out), "--gammas", "0", "5",
                 "--set", cache, "--set", "train.num_threads=1", "--no-progress"]) == 0
    runs = sorted(out.iterdir())
    assert [r.name for r in runs] == ["gamma0_seed0", "gamma5_seed0"]
    for run in runs:
        results = json.loads((run / "results.json").read_text())
        rec = results["reconstruction"]
        assert 0 < rec["psnr_mean"] < 60 and -1 <= rec["ssim_mean"] <= 1 and rec["n_samples"] >= 2
        assert set(results["attributes"]) == {"lv_volume", "myo_volume", "wall_thickness", "infarct_volume"}
        assert 0 <= results["code_density"] <= 1
        stats = results["code_statistics"]
        assert stats["density"] == pytest.approx(results["code_density"], abs=1e-6)
        assert 0 <= stats["always_on_atoms"] <= stats["live_atoms"] <= stats["n_atoms"]
        assert results["reconstruction"]["fid"].startswith("not computed")
    # A second sweep call reuses finished settings.
    assert main(["sweep", "--data", str(phantoms), "--config", "smoke", "--out", str(out), "--gammas", "0",
                 "--set", cache, "--no-progress"]) == 0
    tables = tmp_path / "tables"
    assert main(["compare", *map(str, runs), "--out", str(tables)]) == 0
    with open(tables / "table5.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert [r[0] for r in rows[1:]] == ["γ = 0", "γ = 5"]
    # The AR-loss column is what evaluate measured for each run.
    ar = [json.loads((r / "results.json").read_text())["ar_loss"] for r in runs]
    assert [float(r[2]) for r in rows[1:]] == pytest.approx(ar, abs=5e-4)
    assert (tables / "table1.md").exists() and (tables / "tables.md").exists()


def test_evaluate_a_baseline_run_reads_its_latent(phantoms, tmp_path):
    run = tmp_path / "vae"
    assert main(["train", "--data", str(phantoms), "--config", "baseline-2d", "--out", str(run), "--no-progress",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.family=ar_vae",
                 "--set", "stages.0.steps=4", "--set", "train.batch_size=4"]) == 0
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["family"] == "ar_vae"
    assert results["disentanglement"]["attribute_dims"] == [0, 1, 2, 3]
    assert "code_density" not in results


def test_code_statistics_tell_a_few_always_on_atoms_from_sparse_codes():
    torch.manual_seed(0)
    # 10 maps, K = 8 atoms, 4x4 locations: atoms 0-1 on everywhere, atom 2 on at 1 location per map,
    # atoms 3-7 never: density (2*16 + 1) / (8*16)
    z = torch.zeros(10, 8, 4, 4)
    z[:, :2] = torch.randn(10, 2, 4, 4).abs() + 0.1
    z[:, 2, 0, 0] = -1.0
    got = code_statistics(z)
    active = (z != 0).numpy()
    assert got["density"] == pytest.approx(active.mean())
    assert got["n_atoms"] == 8 and got["live_atoms"] == 3 and got["always_on_atoms"] == 2
    per_location = active.sum(axis=1).ravel()
    assert got["active_per_location"]["p50"] == pytest.approx(np.percentile(per_location, 50))
    assert got["active_per_location"]["p90"] == pytest.approx(np.percentile(per_location, 90))


def _predictions(n: int, seed: int = 0, spatial: tuple[int, ...] = (16, 16)):
    from attri_ssc.evaluation.predict import Predictions

    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, *spatial, generator=gen)
    recon = (images + 0.05 * torch.randn(n, 1, *spatial, generator=gen)).clamp(0, 1)
    raw = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 10 + 1
    return Predictions(images=images, clean=None, recon=recon, attributes=raw.float() + 0.1,
                       latents=torch.randn(n, 4, generator=gen), raw_attributes=raw,
                       labels=torch.zeros(n), case_ids=[f"P{i:03d}" for i in range(n)],
                       slice_index=[-1] * n, density=None, code_statistics=None)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_small_splits_skip_the_metrics_they_cannot_support(n, tmp_path, monkeypatch):
    """Every metric that needs N samples is skipped below N with a line naming N and what it
    got, never a traceback; what is computed matches scikit-image and the MMD's own oracle."""
    from types import SimpleNamespace

    from skimage.metrics import peak_signal_noise_ratio

    from attri_ssc.evaluation.evaluate import MIN_SAMPLES, evaluate_predictions
    from attri_ssc.evaluation.metrics import compute_mmd

    monkeypatch.setenv("ATTRI_SSC_WEIGHTS", str(tmp_path / "no-weights"))
    run = SimpleNamespace(attribute_names=("lv_volume", "myo_volume"), family="vae",
                          config=SimpleNamespace(train=SimpleNamespace(delta=10.0)))
    preds = _predictions(n)
    results = evaluate_predictions(run, preds, split="test")
    expected = {m for m, need in MIN_SAMPLES.items() if n < need}
    assert set(results["skipped"]) == expected
    for metric in expected:
        assert results["skipped"][metric] == f"needs >= {MIN_SAMPLES[metric]} test samples, got {n}"
    rec = results["reconstruction"]
    psnr = [peak_signal_noise_ratio(preds.images[i].numpy(), preds.recon[i].numpy(), data_range=1.0) for i in range(n)]
    assert rec["psnr_mean"] == pytest.approx(np.mean(psnr), rel=1e-6)
    if n >= 2:
        assert rec["mmd_x100"] == pytest.approx(100 * compute_mmd(preds.recon.flatten(1), preds.images.flatten(1)),
                                                rel=1e-5)
        assert results["ar_loss"] is not None
    else:
        assert rec["mmd_x100"] is None and rec["fid"] is None and results["ar_loss"] is None
    if n >= 3:
        assert results["disentanglement"]["mig"] is not None
        assert results["attributes"]["lv_volume"]["spearman"] is not None
    else:
        assert results["disentanglement"]["mig"] is None
        assert results["attributes"]["lv_volume"]["spearman"] is None


def test_volumes_thinner_than_the_ssim_window_skip_ssim(tmp_path, monkeypatch):
    """8-slice volumes: SSIM's 11-voxel window does not fit, so SSIM is skipped with a line;
    PSNR still matches scikit-image."""
    from types import SimpleNamespace

    from skimage.metrics import peak_signal_noise_ratio

    from attri_ssc.evaluation.evaluate import evaluate_predictions

    monkeypatch.setenv("ATTRI_SSC_WEIGHTS", str(tmp_path / "no-weights"))
    run = SimpleNamespace(attribute_names=("lv_volume", "myo_volume"), family="vae",
                          config=SimpleNamespace(train=SimpleNamespace(delta=10.0)))
    preds = _predictions(3, spatial=(8, 16, 16))
    results = evaluate_predictions(run, preds, split="test")
    assert results["skipped"] == {"ssim": "needs every spatial extent >= 11 voxels (its window), got (8, 16, 16)"}
    rec = results["reconstruction"]
    assert rec["ssim_mean"] is None and rec["ssim_std"] is None
    psnr = [peak_signal_noise_ratio(preds.images[i].numpy(), preds.recon[i].numpy(), data_range=1.0) for i in range(3)]
    assert rec["psnr_mean"] == pytest.approx(np.mean(psnr), rel=1e-6)
