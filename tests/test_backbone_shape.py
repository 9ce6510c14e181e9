"""The backbone's shape as config: resolution levels, widths per level, the latent size,
the debiasing step on the support, and runs saved in the old (four-width) form."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from attri_ssc.models.config import ModelConfig, preset
from attri_ssc.models.sparse_coder import debias_on_support, lipschitz_constant, lista_reference
from attri_ssc.models.ssc_vae import SSCVAE
from attri_ssc.nn.blocks import DownsampleBlock, UpsampleBlock


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("levels", [2, 3, 4])
def test_levels_set_the_latent_size_and_the_number_of_resamplings(spatial_dims, levels):
    size = 16
    cfg = preset("tiny", spatial_dims=spatial_dims, channels=(8,) * levels, input_size=size)
    expected = size // 2 ** (levels - 1)  # one 2x downsampling between consecutive levels
    assert cfg.n_levels == levels and cfg.down_factor == 2 ** (levels - 1)
    assert cfg.latent_shape == (expected,) * spatial_dims
    model = SSCVAE(cfg).eval()
    assert sum(isinstance(m, DownsampleBlock) for m in model.encoder.modules()) == levels - 1
    assert sum(isinstance(m, UpsampleBlock) for m in model.decoder.modules()) == levels - 1
    x = torch.rand(2, 1, *(size,) * spatial_dims, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    assert out.features.shape == (2, cfg.latent_channels, *(expected,) * spatial_dims)
    assert out.codes.shape == (2, cfg.n_atoms, *(expected,) * spatial_dims)
    assert out.recon.shape == x.shape
    with torch.no_grad():
        assert torch.allclose(model.decode_codes(out.codes), out.recon, atol=1e-6)


def test_widths_per_level_reach_the_layers():
    cfg = preset("tiny", channels=(4, 8, 12), decoder_channels=(8, 4, 16), n_atoms=16)
    model = SSCVAE(cfg)
    enc_widths = [m.conv.out_channels for m in model.encoder.modules() if isinstance(m, DownsampleBlock)]
    dec_widths = [m.up.in_channels for m in model.decoder.modules() if isinstance(m, UpsampleBlock)]
    assert enc_widths == [8, 12]
    assert dec_widths == [16, 4]  # from the lowest level up
    assert model.decoder.out_norm.num_channels == 8 and model.encoder.out_norm.num_channels == 12


def test_threshold_width_is_config_and_the_table6_layout_keeps_its_weights():
    table6 = SSCVAE(preset("tiny", n_atoms=16))
    assert table6.sparse_coder.thresholds.head is None
    assert table6.sparse_coder.thresholds.res1.conv1.out_channels == 16  # blocks on K channels
    assert not any(".head." in k for k in table6.state_dict())  # old checkpoints' keys unchanged
    narrow = SSCVAE(preset("tiny", n_atoms=16, threshold_channels=4))
    nets = narrow.sparse_coder.thresholds
    assert nets.conv.out_channels == 4 and nets.res2.conv2.out_channels == 4
    assert (nets.head.in_channels, nets.head.out_channels) == (4, 16)
    x = torch.rand(2, 1, 16, 16)
    out = narrow(x)
    assert out.thresholds.shape == out.codes.shape == (2, 16, 2, 2) and bool((out.thresholds >= 0).all())
    with pytest.raises(ValueError, match="threshold_channels"):
        preset("tiny", threshold_channels=6)  # not divisible by norm_groups = 4


def test_input_must_divide_by_the_configured_downsampling():
    with pytest.raises(ValueError, match="multiple of 4"):
        preset("tiny", channels=(8, 8, 8), input_size=18)
    preset("tiny", channels=(8, 8, 8), input_size=20)  # 20 = 5 * 4: fine with three levels
    model = SSCVAE(preset("tiny", channels=(8, 8, 8), input_size=20))
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.rand(1, 1, 20, 18))
    with pytest.raises(ValueError, match="decoder_channels"):
        preset("tiny", channels=(8, 8, 8), decoder_channels=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        preset("tiny", channels=())


def test_paper_preset_is_still_table6():
    p = preset("paper")
    assert p.channels == (128, 512, 512, 512) and p.decoder_channels == (128, 128, 128, 512)
    assert p.n_levels == 4 and p.down_factor == 8 and p.latent_shape == (10, 10, 10)
    assert (p.latent_channels, p.n_atoms, p.n_iter, p.debias_steps) == (256, 512, 16, 0)


# ---------------------------------------------------------------------- debiasing


def _problem(seed: int = 0, c: int = 12, k: int = 24, n: int = 5):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(c, k, generator=g, dtype=torch.float64)
    D = D / D.norm(dim=0, keepdim=True)
    e = torch.randn(2, c, n, generator=g, dtype=torch.float64)
    return D, e


def test_debias_converges_to_least_squares_on_the_support():
    D, e = _problem()
    L = lipschitz_constant(D)
    z = lista_reference(e, D, 0.6, 400, L)  # converged lasso codes
    z_db = debias_on_support(e, D, z, 3000, L)
    assert torch.equal(z_db != 0, z != 0)  # support kept
    for b in range(e.shape[0]):
        for i in range(e.shape[2]):
            support = np.flatnonzero(z[b, :, i].numpy())
            coef, *_ = np.linalg.lstsq(D.numpy()[:, support], e[b, :, i].numpy(), rcond=None)
            np.testing.assert_allclose(z_db[b, support, i].numpy(), coef, atol=1e-6)
    # The debiased codes fit e better than the shrunk ones.
    assert (e - D @ z_db).norm() < (e - D @ z).norm()


def test_one_debias_step_at_the_fixed_point_undoes_the_shrinkage():
    D, e = _problem(1)
    L = lipschitz_constant(D)
    alpha = 0.5
    z = lista_reference(e, D, alpha, 2000, L)
    one = debias_on_support(e, D, z, 1, L)
    np.testing.assert_allclose(one.numpy(), (z + torch.sign(z) * alpha / L).numpy(), atol=1e-8)


def test_model_with_debiasing_keeps_density_and_decodes_its_codes():
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    plain = SSCVAE(preset("tiny", n_iter=8)).eval()
    torch.manual_seed(0)
    debiased = SSCVAE(preset("tiny", n_iter=8, debias_steps=2)).eval()
    with torch.no_grad():
        a, b = plain(x), debiased(x)
        assert torch.equal(a.codes != 0, b.codes != 0) and a.density == b.density
        assert not torch.allclose(a.codes, b.codes)
        assert torch.allclose(debiased.decode_codes(b.codes), b.recon, atol=1e-6)
    with pytest.raises(ValueError, match="debias_steps"):
        preset("tiny", debias_steps=-1)


# ---------------------------------------------------------------------- old runs


def _train(data: Path, out: Path, cache: Path, *sets: str) -> None:
    from attri_ssc.cli import main

    args = ["train", "--data", str(data), "--config", "smoke", "--out", str(out), "--no-progress",
            "--set", f"data.cache_dir={cache}", "--set", "train.num_threads=1"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0


def _drop_new_fields(run: Path) -> None:
    """Rewrite a run's saved configs as the code before levels-as-config wrote them."""
    new_fields = {"debias_steps"}
    for path in [run / "model.json", *sorted((run / "checkpoints").glob("*.json"))]:
        record = json.loads(path.read_text())
        model_cfg = record["meta"]["config"]["model"]
        assert len(model_cfg["channels"]) == 4
        for key in new_fields:
            model_cfg.pop(key, None)
        path.write_text(json.dumps(record))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for key in new_fields:
        cfg["model"].pop(key, None)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.mark.slow
def test_a_four_width_run_in_the_old_form_loads_and_evaluates_and_a_three_level_run_too(phantom_dir, tmp_path):
    from attri_ssc.cli import main
    from attri_ssc.runs import load_run

    old = tmp_path / "old"
    _train(phantom_dir, old, tmp_path / "cache")
    _drop_new_fields(old)
    assert "debias_steps" not in (old / "model.json").read_text()
    model_cfg = load_run(old).config.model
    assert model_cfg.channels == (8, 8, 8, 8) and model_cfg.debias_steps == 0
    assert main(["evaluate", str(old), "--no-progress"]) == 0
    results = json.loads((old / "results.json").read_text())
    assert np.isfinite(results["reconstruction"]["psnr_mean"]) and 0 <= results["code_density"] <= 1

    three = tmp_path / "three"
    _train(phantom_dir, three, tmp_path / "cache", "model.channels=[8,8,8]", "model.debias_steps=1")
    assert load_run(three).config.model.latent_shape == (4, 4)
    assert main(["evaluate", str(three), "--no-progress"]) == 0
    assert np.isfinite(json.loads((three / "results.json").read_text())["reconstruction"]["psnr_mean"])
