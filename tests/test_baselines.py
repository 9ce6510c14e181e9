"""One contract for the four baselines (VAE, β-VAE, AR-VAE, Attri-VAE), 2D and 3D.

Numbers are checked against NumPy oracles written from the definitions (KL closed form,
summed squared error / BCE, the AR sign loss by explicit pair loops, the classifier BCE).
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from attri_ssc.baselines import (
    BASELINES,
    AttriVAE,
    BaselineConfig,
    VAEOutput,
    baseline_loss_terms,
    build_baseline,
    count_parameters,
    kl_divergence,
    make_baseline_config,
    total_loss,
)
from attri_ssc.baselines.losses import reconstruction_loss
from attri_ssc.checkpoint import load_baseline, save_baseline
from attri_ssc.errors import CheckpointError
from attri_ssc.losses import attribute_regularization_loss

VARIANTS = ("vae", "beta_vae", "ar_vae", "attri_vae")
DIMS = {2: (32, 32), 3: (16, 16, 16)}
A = 3  # attributes in the tiny configs
B = 6  # batch size


def tiny_baseline_config(variant: str, spatial_dims: int, **overrides) -> BaselineConfig:
    """A tiny backbone that keeps every test in milliseconds."""
    kwargs = dict(
        spatial_dims=spatial_dims,
        input_size=DIMS[spatial_dims],
        encoder_channels=(4, 4, 8, 8, 4),
        decoder_channels=(8, 8, 8, 4, 4, 4),
        fc_dims=(16, 12),
        latent_dim=8,
        n_attributes=A,
        classifier_dims=(8, 4),
        dropout=0.25,
        gamma=3.0,
        delta=2.0,
        cls_weight=0.7,
    )
    kwargs.update(overrides)
    return make_baseline_config(variant, **kwargs)


def make_batch(spatial_dims: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 1, *DIMS[spatial_dims], generator=g)
    attributes = torch.rand(B, A, generator=g)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    return x, attributes, labels


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models: intra-op threads only add synchronisation cost on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


CASES = [(v, d) for v in VARIANTS for d in (2, 3)]
IDS = [f"{v}-{d}d" for v, d in CASES]


@pytest.fixture(params=CASES, ids=IDS)
def case(request):
    variant, dims = request.param
    torch.manual_seed(0)
    cfg = tiny_baseline_config(variant, dims)
    return cfg, AttriVAE(cfg), make_batch(dims)


# ------------------------------------------------------------------ numpy oracles
def np_kl(mu: np.ndarray, logvar: np.ndarray) -> float:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over dims, mean over batch, in float64."""
    per_sample = [
        sum(0.5 * (m * m + math.exp(lv) - 1.0 - lv) for m, lv in zip(mu_row, lv_row))
        for mu_row, lv_row in zip(mu.astype(np.float64), logvar.astype(np.float64))
    ]
    return float(np.mean(per_sample))


def np_ar(pred: np.ndarray, target: np.ndarray, delta: float) -> float:
    """Sum over attributes of the mean over all n² ordered pairs of |tanh(δΔâ) − sign(Δa)|."""
    n, a = pred.shape
    total = 0.0
    for m in range(a):
        acc = 0.0
        for p in range(n):
            for q in range(n):
                acc += abs(math.tanh(delta * (pred[p, m] - pred[q, m])) - np.sign(target[p, m] - target[q, m]))
        total += acc / (n * n)
    return total


def np_bce_logits(logits: np.ndarray, labels: np.ndarray) -> float:
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return float(np.mean(-(labels * np.log(p) + (1 - labels) * np.log(1 - p))))


def to_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


# ------------------------------------------------------------------ registry and config
def test_registry_defaults():
    assert set(BASELINES) == set(VARIANTS)
    assert {k: c.beta for k, c in BASELINES.items()} == {"vae": 1.0, "beta_vae": 2.0, "ar_vae": 2.0, "attri_vae": 2.0}
    assert {k: c.terms for k, c in BASELINES.items()} == {
        "vae": ("recon", "kl"),
        "beta_vae": ("recon", "kl"),
        "ar_vae": ("recon", "kl", "ar"),
        "attri_vae": ("recon", "kl", "ar", "cls"),
    }
    cfg = BASELINES["attri_vae"]
    assert cfg.encoder_channels == (8, 16, 32, 64, 2) and cfg.latent_dim == 64 and cfg.fc_dims == (128, 96)
    assert (cfg.gamma, cfg.delta) == (200.0, 10.0)
    # Attri-VAE's 80³ volume gives its 250-wide bottleneck.
    assert make_baseline_config("vae", spatial_dims=3, input_size=(80, 80, 80)).flat_dim == 250


def test_config_roundtrip_through_json():
    cfg = tiny_baseline_config("attri_vae", 3, recon_loss="bce")
    again = BaselineConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown"):
        BaselineConfig.from_dict({**cfg.to_dict(), "bogus": 1})


@pytest.mark.parametrize(
    "variant, overrides, name, value",
    [
        ("vae", dict(input_size=(30, 32)), "input_size", "30"),
        ("vae", dict(spatial_dims=3, input_size=(32, 32, 40)), "input_size", "40"),
        ("vae", dict(spatial_dims=4), "spatial_dims", "4"),
        ("vae", dict(spatial_dims=3), "input_size", "(64, 64)"),
        ("ar_vae", dict(latent_dim=3, n_attributes=4), "n_attributes", "4"),
        ("attri_vae", dict(latent_dim=3, n_attributes=4), "n_attributes", "4"),
        ("ar_vae", dict(n_attributes=0), "n_attributes", "0"),
        ("vae", dict(beta=2.0), "beta", "2.0"),
        ("beta_vae", dict(beta=-1.0), "beta", "-1.0"),
        ("ar_vae", dict(delta=0.0), "delta", "0.0"),
        ("vae", dict(recon_loss="l1"), "recon_loss", "l1"),
        ("vae", dict(decoder_channels=(8, 8)), "decoder_channels", "(8, 8)"),
        ("vae", dict(dropout=1.0), "dropout", "1.0"),
        ("vae", dict(latent_dim=0), "latent_dim", "0"),
    ],
)
def test_bad_config_raises_naming_argument_and_value(variant, overrides, name, value):
    with pytest.raises(ValueError) as info:
        make_baseline_config(variant, **overrides)
    assert name in str(info.value) and value in str(info.value)


def test_bad_variant_and_model_input_raise():
    with pytest.raises(ValueError, match="variant='gan'"):
        BaselineConfig(variant="gan")
    with pytest.raises(ValueError, match="name='gan'"):
        make_baseline_config("gan")
    model = AttriVAE(tiny_baseline_config("vae", 2))
    with pytest.raises(ValueError, match=r"x.shape=\(2, 1, 16, 16\)"):
        model(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"z.shape=\(2, 5\)"):
        model.decode(torch.zeros(2, 5))
    # The plain VAEs ignore n_attributes (no AR term), even if it exceeds latent_dim.
    assert make_baseline_config("vae", latent_dim=2, n_attributes=5).n_attributes == 5


def test_parameter_count_matches_architecture_at_64x64():
    """Count the default 2D 64×64 backbone by hand from the documented layer list."""
    k = 3 * 3
    enc = [1, 8, 16, 32, 64, 2]
    n = sum(ci * co * k + 2 * co for ci, co in zip(enc[:-1], enc[1:]))  # conv (no bias) + BN
    flat = 2 * 4 * 4
    n += flat * 128 + 128 + 128 * 96 + 96 + 2 * (96 * 64 + 64)  # encoder MLP, μ and log σ² heads
    n += 64 * flat + flat  # decoder linear
    dec = [2, 64, 64, 32, 16, 8, 4]
    n += sum(ci * co * k + 2 * co for ci, co in zip(dec[:-1], dec[1:]))  # convs/deconvs + BN
    n += 4 * 1 * k + 1  # output conv
    assert count_parameters(build_baseline("vae")) == n
    assert count_parameters(build_baseline("beta_vae")) == n
    assert count_parameters(build_baseline("ar_vae")) == n
    cls = 64 * 32 + 2 * 32 + 32 * 16 + 2 * 16 + 16 * 1 + 1  # 64→32→16→1, BN on hidden
    assert count_parameters(build_baseline("attri_vae")) == n + cls


# ------------------------------------------------------------------ model contract
def test_output_shapes_and_ranges(case):
    cfg, model, (x, _, _) = case
    out = model(x)
    assert isinstance(out, VAEOutput)
    assert out.recon.shape == x.shape
    assert out.recon.min() >= 0 and out.recon.max() <= 1
    for t in (out.mu, out.logvar, out.z):
        assert t.shape == (B, cfg.latent_dim)
    if cfg.variant == "attri_vae":
        assert out.logits.shape == (B,)
        assert model.classifier is not None
    else:
        assert out.logits is None and model.classifier is None
        assert not any("classifier" in name for name, _ in model.named_parameters())
    assert model.decode(out.z).shape == x.shape
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, *x.shape[1:])


def test_eval_is_deterministic_and_uses_mean(case):
    _, model, (x, _, _) = case
    model.eval()
    with torch.no_grad():
        first, second = model(x), model(x)
        mu, logvar = model.encode(x)
    torch.testing.assert_close(first.z, first.mu, rtol=0, atol=0)
    torch.testing.assert_close(first.recon, second.recon, rtol=0, atol=0)
    torch.testing.assert_close(first.mu, mu, rtol=0, atol=0)
    torch.testing.assert_close(first.logvar, logvar, rtol=0, atol=0)
    torch.testing.assert_close(first.recon, model.decode(mu), rtol=0, atol=0)
    model.train()
    with torch.no_grad():
        sampled = model(x)
    assert not torch.equal(sampled.z, sampled.mu)


def test_reparameterisation_uses_log_variance():
    """In training, z ~ N(μ, exp(logvar)): σ = exp(½ logvar), not exp(logvar)."""
    model = AttriVAE(tiny_baseline_config("vae", 2)).train()
    torch.manual_seed(1)
    n = 20000
    mu = torch.tensor([0.5, -2.0]).expand(n, 2)
    logvar = torch.tensor([math.log(4.0), math.log(0.25)]).expand(n, 2)
    z = model.reparameterize(mu, logvar)
    std = z.std(dim=0)
    # Standard error of a sample std is σ/sqrt(2n) ≈ 0.01σ; allow 5 of them.
    torch.testing.assert_close(std, torch.tensor([2.0, 0.5]), rtol=0.05, atol=0)
    torch.testing.assert_close(z.mean(dim=0), torch.tensor([0.5, -2.0]), rtol=0, atol=0.05)


# ------------------------------------------------------------------ losses against oracles
def test_kl_closed_form_matches_numpy():
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(5, 7, generator=g, dtype=torch.float64) * 2
    logvar = torch.randn(5, 7, generator=g, dtype=torch.float64)
    assert kl_divergence(mu, logvar).item() == pytest.approx(np_kl(mu.numpy(), logvar.numpy()), rel=1e-12)
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


def test_loss_terms_match_oracles(case):
    cfg, model, (x, attributes, labels) = case
    out = model(x)
    terms = baseline_loss_terms(out, x, attributes, labels, cfg)
    assert tuple(terms) == cfg.terms
    assert terms["recon"].item() == pytest.approx(float(np.sum((to_np(out.recon) - to_np(x)) ** 2)) / B, rel=1e-5)
    assert terms["kl"].item() == pytest.approx(cfg.beta * np_kl(to_np(out.mu), to_np(out.logvar)), rel=1e-5)
    if cfg.uses_ar:
        z_a = out.z[:, :A]
        expected = cfg.gamma * attribute_regularization_loss(z_a, attributes, delta=cfg.delta)
        assert terms["ar"].item() == pytest.approx(expected.item(), rel=1e-6)
        assert terms["ar"].item() == pytest.approx(cfg.gamma * np_ar(to_np(z_a), to_np(attributes), cfg.delta), rel=1e-5)
    if cfg.uses_classifier:
        oracle = cfg.cls_weight * np_bce_logits(to_np(out.logits), labels.numpy().astype(np.float64))
        assert terms["cls"].item() == pytest.approx(oracle, rel=1e-5)
    assert total_loss(terms).item() == pytest.approx(sum(t.item() for t in terms.values()), rel=1e-6)


@pytest.mark.parametrize("variant", ["ar_vae", "attri_vae"])
def test_ar_term_uses_the_gather(variant):
    """With several processes the trainer passes a gather: AR then compares the gathered rows;
    the other terms stay per-process."""
    cfg = tiny_baseline_config(variant, 2)
    torch.manual_seed(0)
    model = AttriVAE(cfg).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(B, 1, *DIMS[2], generator=g)
    attributes = torch.rand(B, A, generator=g)
    labels = torch.randint(0, 2, (B,), generator=g)
    out = model(x)
    fake_gather = lambda t: torch.cat([t, 0.5 * t.flip(0)])  # noqa: E731
    terms = baseline_loss_terms(out, x, attributes, labels, cfg, gather=fake_gather)
    plain = baseline_loss_terms(out, x, attributes, labels, cfg)
    expected = cfg.gamma * np_ar(to_np(fake_gather(out.z[:, :A])), to_np(fake_gather(attributes)), cfg.delta)
    assert terms["ar"].item() == pytest.approx(expected, rel=1e-5)
    assert terms["ar"].item() != pytest.approx(plain["ar"].item(), rel=1e-3)
    for name in set(terms) - {"ar"}:
        assert terms[name].item() == plain[name].item()


def test_beta_scales_kl_as_configured():
    """The 'kl' term is β times the closed form, for given μ and log σ² of order one."""
    cfg = tiny_baseline_config("beta_vae", 2)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(B, 1, *DIMS[2], generator=g)
    mu = torch.randn(B, cfg.latent_dim, generator=g)
    logvar = torch.randn(B, cfg.latent_dim, generator=g)
    out = VAEOutput(recon=x.clone(), mu=mu, logvar=logvar, z=mu)
    raw = np_kl(mu.numpy(), logvar.numpy())
    assert raw > 1.0
    for beta in (0.5, 2.0, 3.5):
        terms = baseline_loss_terms(out, x, None, None, dataclasses.replace(cfg, beta=beta))
        assert terms["kl"].item() == pytest.approx(beta * raw, rel=1e-5)
        assert terms["recon"].item() == 0.0
    assert BASELINES["beta_vae"].beta == 2.0
    # vae (β = 1) on the same output gives the raw KL.
    vae_terms = baseline_loss_terms(out, x, None, None, tiny_baseline_config("vae", 2))
    assert vae_terms["kl"].item() == pytest.approx(raw, rel=1e-5)


def test_bce_reconstruction_matches_numpy():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64)
    recon = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64) * 0.98 + 0.01
    r, t = recon.numpy(), x.numpy()
    oracle = float(np.sum(-(t * np.log(r) + (1 - t) * np.log(1 - r)))) / 3
    assert reconstruction_loss(recon, x, "bce").item() == pytest.approx(oracle, rel=1e-10)
    with pytest.raises(ValueError, match="kind='l1'"):
        reconstruction_loss(recon, x, "l1")


def test_ar_gradient_reaches_only_regularised_dims():
    torch.manual_seed(0)
    cfg = tiny_baseline_config("ar_vae", 2)
    model = AttriVAE(cfg).train()
    x, attributes, labels = make_batch(2)
    out = model(x)
    out.z.retain_grad()
    baseline_loss_terms(out, x, attributes, labels, cfg)["ar"].backward()
    grad = out.z.grad
    assert grad[:, :A].abs().sum() > 0
    assert torch.count_nonzero(grad[:, A:]) == 0


def test_missing_supervision_raises():
    torch.manual_seed(0)
    x, attributes, labels = make_batch(2)
    ar = tiny_baseline_config("ar_vae", 2)
    out = AttriVAE(ar)(x)
    with pytest.raises(ValueError, match="attributes.shape=None"):
        baseline_loss_terms(out, x, None, labels, ar)
    with pytest.raises(ValueError, match=r"attributes.shape=\(6, 2\)"):
        baseline_loss_terms(out, x, attributes[:, :2], labels, ar)
    attri = tiny_baseline_config("attri_vae", 2)
    out = AttriVAE(attri)(x)
    with pytest.raises(ValueError, match="labels.shape=None"):
        baseline_loss_terms(out, x, attributes, None, attri)
    # Plain VAEs need neither.
    vae = tiny_baseline_config("vae", 2)
    assert set(baseline_loss_terms(AttriVAE(vae)(x), x, None, None, vae)) == {"recon", "kl"}


# ------------------------------------------------------------------ training step
def test_gradients_finite_and_every_parameter_moves(case):
    cfg, model, (x, attributes, labels) = case
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = total_loss(baseline_loss_terms(model(x), x, attributes, labels, cfg))
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    optimizer.step()
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p.detach(), before[name])]
    assert unchanged == []


# ------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("variant, dims", [("attri_vae", 3), ("beta_vae", 2)])
def test_save_load_roundtrip(tmp_path, variant, dims):
    torch.manual_seed(0)
    cfg = tiny_baseline_config(variant, dims)
    model = AttriVAE(cfg)
    x, attributes, labels = make_batch(dims)
    model.train()
    model(x)  # update the BatchNorm running statistics so they are not at their defaults
    model.eval()
    prefix = tmp_path / "ckpt" / "baseline"
    save_baseline(model, prefix)
    loaded = load_baseline(prefix)
    assert loaded.config == cfg and not loaded.training
    state, state2 = model.state_dict(), loaded.state_dict()
    assert set(state) == set(state2)
    for key in state:
        assert torch.equal(state[key], state2[key]), key
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).recon, model(x).recon, rtol=0, atol=0)


def test_load_rejects_other_checkpoints(tmp_path):
    from attri_ssc.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "other", {"w": torch.zeros(2)}, {"model_family": "ssc_vae"})
    with pytest.raises(CheckpointError, match="model_family='ssc_vae'"):
        load_baseline(tmp_path / "other")
    cfg = tiny_baseline_config("vae", 2)
    save_checkpoint(tmp_path / "bad", {"w": torch.zeros(2)}, {"model_family": "baseline", "model_config": cfg.to_dict()})
    with pytest.raises(CheckpointError, match="missing keys"):
        load_baseline(tmp_path / "bad")
