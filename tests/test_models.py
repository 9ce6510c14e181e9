"""The composed SSC-VAE in 2D and 3D: shapes, internal consistency (DZ, density,
decode_codes), gradients, one Adam step, eval determinism, config validation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from attri_ssc.losses import ssc_loss_terms
from attri_ssc.models.config import PRESETS, ModelConfig, preset
from attri_ssc.models.outputs import SSCOutput
from attri_ssc.models.ssc_vae import SSCVAE


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def tiny_model(request, tiny_config):
    return SSCVAE(tiny_config(request.param))


def _input(model: SSCVAE, batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, *model.config.input_shape, generator=g)


def test_output_shapes_and_internal_consistency(tiny_model):
    cfg = tiny_model.config
    x = _input(tiny_model)
    out = tiny_model(x)
    assert isinstance(out, SSCOutput)
    s = cfg.latent_shape
    assert out.recon.shape == x.shape
    assert out.features.shape == (2, cfg.latent_channels, *s)
    assert out.codes.shape == (2, cfg.n_atoms, *s)
    assert out.thresholds.shape == (2, cfg.n_atoms, *s)
    assert out.coded.shape == (2, cfg.latent_channels, *s)
    assert (out.thresholds >= 0).all()
    D = tiny_model.dictionary().detach()
    np.testing.assert_allclose(
        out.coded.detach().numpy(),
        np.einsum("ck,bk...->bc...", D.numpy(), out.codes.detach().numpy()),
        atol=1e-5,
    )
    nz = np.count_nonzero(out.codes.detach().numpy())
    assert float(out.density) == pytest.approx(nz / out.codes.numel())
    assert 0.0 < float(out.density) < 1.0


def test_decode_codes_reproduces_forward_in_eval(tiny_model):
    tiny_model.eval()
    x = _input(tiny_model)
    with torch.no_grad():
        out = tiny_model(x)
        torch.testing.assert_close(tiny_model.decode_codes(out.codes), out.recon)
        e = tiny_model.encode(x)
        z, alpha = tiny_model.sparse_code(e)
    torch.testing.assert_close(e, out.features)
    torch.testing.assert_close(z, out.codes)
    torch.testing.assert_close(alpha, out.thresholds)


def test_n_iter_override_changes_codes(tiny_model):
    tiny_model.eval()
    x = _input(tiny_model)
    with torch.no_grad():
        a = tiny_model(x, n_iter=1).codes
        b = tiny_model(x, n_iter=50).codes
        c = tiny_model(x, n_iter=50).codes
    assert not torch.allclose(a, b)
    torch.testing.assert_close(b, c)


def test_gradients_finite_and_every_parameter_moves_after_one_adam_step(tiny_model):
    tiny_model.train()
    x = _input(tiny_model, batch=3)
    terms = ssc_loss_terms(x, tiny_model(x), tiny_model.config)
    sum(terms.values()).backward()
    named = dict(tiny_model.named_parameters())
    assert named, "model has no parameters"
    for name, p in named.items():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
    before = {k: v.detach().clone() for k, v in named.items()}
    torch.optim.Adam(tiny_model.parameters(), lr=1e-3).step()
    tiny_model.post_step()
    unchanged = [k for k, v in named.items() if torch.equal(v.detach(), before[k])]
    assert unchanged == []


def test_eval_mode_is_deterministic(tiny_model):
    tiny_model.eval()
    x = _input(tiny_model, batch=3)
    with torch.no_grad():
        a, b = tiny_model(x), tiny_model(x)
    for f in dataclasses.fields(SSCOutput):
        assert torch.equal(getattr(a, f.name), getattr(b, f.name)), f.name
    # and a sample does not depend on the rest of the batch in eval mode
    with torch.no_grad():
        single = tiny_model(x[:1]).recon
    torch.testing.assert_close(single, a.recon[:1], rtol=1e-4, atol=1e-5)


def test_nonneg_codes_option(tiny_config):
    model = SSCVAE(tiny_config(2, nonneg_codes=True))
    out = model(_input(model))
    assert (out.codes >= 0).all() and (out.codes > 0).any()
    signed = SSCVAE(tiny_config(2))(_input(model)).codes
    assert (signed < 0).any()


def test_latent_norm_batch_fixes_feature_scale(tiny_config):
    """With latent_norm='batch' the encoder cannot shrink e: scaling its last conv by 0.1
    leaves e (zero mean, unit variance per channel in training) unchanged; without the
    normalisation e shrinks tenfold."""
    # (BatchNorm's eps = 1e-5 makes the "batch" ratio slightly below 1 at small scales.)
    for norm, expected_ratio in (("batch", 1.0), ("none", 0.1)):
        torch.manual_seed(0)
        model = SSCVAE(tiny_config(2, latent_norm=norm))
        x = _input(model, batch=4)
        e1 = model(x).features.detach()
        with torch.no_grad():
            model.encoder.out_conv.weight.mul_(0.1)
            model.encoder.out_conv.bias.mul_(0.1)
        e2 = model(x).features.detach()
        ratio = float(e2.norm() / e1.norm())
        assert ratio == pytest.approx(expected_ratio, rel=0.05)
        if norm == "batch":
            np.testing.assert_allclose(e1.var(dim=(0, 2, 3), unbiased=False).numpy(), 1.0, atol=1e-2)
            np.testing.assert_allclose(e2.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-5)


def test_forward_rejects_bad_input_shape(tiny_config):
    model = SSCVAE(tiny_config(2))
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.rand(1, 1, 16, 12))
    with pytest.raises(ValueError, match="x.shape"):
        model(torch.rand(1, 1, 16, 16, 16))


@pytest.mark.parametrize(
    "overrides, arg, value",
    [
        (dict(input_size=60), "input_size", "60"),
        (dict(input_size=(16, 12)), "input_size", "12"),
        (dict(channels=(8, 8, 10, 8)), "channels", "10"),
        (dict(decoder_channels=(6, 8, 8, 8)), "decoder_channels", "6"),
        (dict(n_atoms=0), "n_atoms", "0"),
        (dict(n_atoms=18), "n_atoms", "18"),  # not divisible by norm_groups=4
        (dict(spatial_dims=4), "spatial_dims", "4"),
        (dict(spatial_dims=1), "spatial_dims", "1"),
        (dict(channels=()), "channels", "()"),
        (dict(decoder_channels=(8, 8, 8)), "decoder_channels", "(8, 8, 8)"),  # 3 levels, channels has 4
        (dict(channels=(8,) * 6), "input_size", "16"),  # 5 downsamplings: 16 is not a multiple of 32
        (dict(debias_steps=-1), "debias_steps", "-1"),
        (dict(latent_channels=0), "latent_channels", "0"),
        (dict(n_iter=0), "n_iter", "0"),
        (dict(alpha_penalty="none"), "alpha_penalty", "none"),
        (dict(threshold_param="relu"), "threshold_param", "relu"),
        (dict(latent_norm="layer"), "latent_norm", "layer"),
        (dict(lipschitz_margin=0.5), "lipschitz_margin", "0.5"),
    ],
)
def test_config_rejects_bad_arguments(tiny_config, overrides, arg, value):
    with pytest.raises(ValueError, match=arg) as info:
        tiny_config(**{"spatial_dims": 2, **overrides})
    assert value in str(info.value)


def test_config_round_trip_and_frozen(tiny_config):
    cfg = tiny_config(3, decoder_channels=(4, 8, 8, 8), input_size=(16, 24, 32))
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.latent_shape == (2, 3, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_atoms = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="bogus"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_presets_are_valid_and_paper_matches_table6():
    for name in PRESETS:
        preset(name)
    p = preset("paper")
    assert p.channels == (128, 512, 512, 512)
    assert (p.latent_channels, p.n_atoms, p.n_iter) == (256, 512, 16)
    small = preset("small")
    assert small.spatial_dims == 2 and small.input_shape == (64, 64)
    with pytest.raises(ValueError, match="nope"):
        preset("nope")


def test_model_rejects_wrong_config_type():
    with pytest.raises(ValueError, match="config"):
        SSCVAE({"spatial_dims": 2})  # type: ignore[arg-type]


def test_model_summary_command_reports_counts(capsys, tiny_config):
    from attri_ssc.cli import main

    assert main(["model-summary", "--preset", "tiny", "--spatial-dims", "3", "--size", "16", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    model = SSCVAE(tiny_config(3))
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert summary["codes_shape"] == [1, 16, 2, 2, 2]
    assert summary["forward_seconds"] > 0
    assert main(["model-summary", "--preset", "tiny", "--size", "12"]) == 2  # ConfigError exit code
    assert "input_size" in capsys.readouterr().err
