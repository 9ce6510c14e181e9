"""LPIPS: the v0.1 aggregation on a hand-computed case, the trunks against an nn.Module
build of the torchvision architectures, and the image pipeline with random weights.

None of these tests needs the downloaded weights (the slow fetch test in
test_weights.py uses the real ones).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attri_ssc.evaluation.lpips import (
    LPIPSNetwork,
    compute_lpips,
    lpips_from_features,
    normalize_channels,
)
from attri_ssc.evaluation.weights import NOT_COMPUTED, WeightsError, write_weights_folder
from attri_ssc.nn import factories


def _numpy_lpips(feats_x, feats_y, heads, eps=1e-10):
    """LPIPS v0.1 written out with explicit loops over batch, pixels and channels."""
    batch = feats_x[0].shape[0]
    out = np.zeros(batch)
    for fx, fy, w in zip(feats_x, feats_y, heads):
        _, c, h, wd = fx.shape
        for b in range(batch):
            acc = 0.0
            for i in range(h):
                for j in range(wd):
                    nx = np.sqrt(sum(fx[b, k, i, j] ** 2 for k in range(c))) + eps
                    ny = np.sqrt(sum(fy[b, k, i, j] ** 2 for k in range(c))) + eps
                    acc += sum(w[k] * (fx[b, k, i, j] / nx - fy[b, k, i, j] / ny) ** 2 for k in range(c))
            out[b] += acc / (h * wd)
    return out


def test_aggregation_matches_a_hand_computed_case():
    # One pixel, two channels, one layer: f(x) = (3, 4) → (0.6, 0.8); f(y) = (1, 0) → (1, 0);
    # heads (2, 5): 2·(0.6 − 1)² + 5·(0.8 − 0)² = 0.32 + 3.2 = 3.52.
    fx = torch.tensor([3.0, 4.0], dtype=torch.float64).view(1, 2, 1, 1)
    fy = torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 2, 1, 1)
    w = torch.tensor([2.0, 5.0], dtype=torch.float64)
    assert lpips_from_features([fx], [fy], [w]).item() == pytest.approx(3.52, abs=1e-9)


def test_aggregation_matches_explicit_loops_on_two_layers():
    rng = np.random.default_rng(0)
    shapes = [(2, 3, 2, 2), (2, 4, 1, 3)]  # (B, C_l, H_l, W_l) per layer
    fx = [rng.normal(size=s) for s in shapes]
    fy = [rng.normal(size=s) for s in shapes]
    heads = [rng.uniform(0, 1, size=s[1]) for s in shapes]
    expected = _numpy_lpips(fx, fy, heads)
    got = lpips_from_features([torch.from_numpy(a) for a in fx], [torch.from_numpy(a) for a in fy],
                              [torch.from_numpy(h) for h in heads])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    with pytest.raises(ValueError, match="one head per layer"):
        lpips_from_features([torch.from_numpy(a) for a in fx], [torch.from_numpy(a) for a in fy],
                            [torch.from_numpy(heads[0])])


def test_normalize_channels_gives_unit_vectors_and_keeps_zeros():
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64)
    x[0, :, 0, 0] = 0
    n = normalize_channels(x)
    norms = n.pow(2).sum(1).sqrt()
    expected = torch.ones_like(norms)
    expected[0, 0, 0] = 0
    torch.testing.assert_close(norms, expected)


# --- trunks ---------------------------------------------------------------------------


def _random_lpips_tensors(net: str, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in LPIPSNetwork.tensor_shapes(net).items():
        if key.startswith("lin."):
            out[key] = torch.rand(shape, generator=gen)  # non-negative heads
        elif key.endswith(".weight"):
            out[key] = torch.randn(shape, generator=gen) * (2.0 / (shape[1] * shape[2] * shape[3])) ** 0.5
        else:
            out[key] = torch.randn(shape, generator=gen) * 0.1
    return out


@pytest.fixture(scope="module")
def alex() -> LPIPSNetwork:
    return LPIPSNetwork.from_tensors("alex", _random_lpips_tensors("alex"))


def _torchvision_style_trunk(net: str, tensors) -> tuple[nn.Sequential, list[int]]:
    """The torchvision AlexNet / VGG16 `features` layout, built from nn modules, and the
    indices after which LPIPS taps the ReLU outputs."""
    def conv(c_in, c_out, k, s, p, idx):
        layer = factories.conv(2, c_in, c_out, k, stride=s, padding=p)
        layer.weight.data = tensors[f"trunk.{idx}.weight"]
        layer.bias.data = tensors[f"trunk.{idx}.bias"]
        return layer

    if net == "alex":
        layers = [conv(3, 64, 11, 4, 2, 0), nn.ReLU(), factories.max_pool(2, 3, 2),
                  conv(64, 192, 5, 1, 2, 1), nn.ReLU(), factories.max_pool(2, 3, 2),
                  conv(192, 384, 3, 1, 1, 2), nn.ReLU(), conv(384, 256, 3, 1, 1, 3), nn.ReLU(),
                  conv(256, 256, 3, 1, 1, 4), nn.ReLU()]
        return nn.Sequential(*layers), [1, 4, 7, 9, 11]
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    layers, c_in, idx = [], 3, 0
    for v in cfg:
        if v == "M":
            layers.append(factories.max_pool(2, 2, 2))
        else:
            layers += [conv(c_in, v, 3, 1, 1, idx), nn.ReLU()]
            c_in, idx = v, idx + 1
    return nn.Sequential(*layers), [3, 8, 15, 22, 29]


@pytest.mark.parametrize("net,size", [("alex", 64), ("vgg", 32)])
def test_trunk_matches_torchvision_layout(net, size):
    tensors = _random_lpips_tensors(net, seed=1)
    model = LPIPSNetwork.from_tensors(net, tensors)
    seq, taps = _torchvision_style_trunk(net, tensors)
    x = torch.rand(2, 3, size, size) * 2 - 1
    expected, h = [], (x - model.shift) / model.scale
    with torch.no_grad():
        for i, layer in enumerate(seq):
            h = layer(h)
            if i in taps:
                expected.append(h)
        got = model.features(x)
    assert len(got) == 5
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_lpips_network_rejects_bad_tensors():
    tensors = _random_lpips_tensors("alex")
    del tensors["lin.4.weight"]
    with pytest.raises(WeightsError, match="lin.4.weight"):
        LPIPSNetwork.from_tensors("alex", tensors)
    with pytest.raises(ValueError, match="net must be one of"):
        LPIPSNetwork("squeeze")


# --- the image pipeline -------------------------------------------------------------------


def test_compute_lpips_maps_unit_range_images_to_network_input(alex):
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 1, 40, 36, generator=gen)
    y = torch.rand(3, 1, 40, 36, generator=gen)
    got = compute_lpips(x, y, network=alex)
    with torch.no_grad():
        expected = alex((x * 2 - 1).repeat(1, 3, 1, 1), (y * 2 - 1).repeat(1, 3, 1, 1))
    assert got.shape == (3,) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected)
    assert torch.all(got > 0)
    torch.testing.assert_close(compute_lpips(y, x, network=alex), got)  # symmetric
    torch.testing.assert_close(compute_lpips(x, y, network=alex, batch_size=1), got)
    assert torch.all(compute_lpips(x, x, network=alex) == 0)


def test_compute_lpips_3d_is_the_mean_over_slices(alex):
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 32, 32, 3, generator=gen)
    y = torch.rand(2, 1, 32, 32, 3, generator=gen)
    got = compute_lpips(x, y, network=alex)
    per_slice = torch.stack([compute_lpips(x[..., d], y[..., d], network=alex) for d in range(3)], dim=1)
    torch.testing.assert_close(got, per_slice.mean(dim=1))


def test_compute_lpips_grows_with_noise(alex):
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 1, 48, 48, generator=gen) * 0.5 + 0.25
    noise = torch.randn(2, 1, 48, 48, generator=gen)
    d = [compute_lpips(x, (x + s * noise).clamp(0, 1), network=alex) for s in (0.01, 0.1)]
    assert torch.all(d[0] < d[1])


def test_compute_lpips_without_weights_reports_not_computed(tmp_path):
    x = torch.rand(2, 1, 32, 32)
    assert compute_lpips(x, x, weights_dir=tmp_path) == NOT_COMPUTED
    assert compute_lpips(x, x, net="vgg", weights_dir=tmp_path / "missing") == NOT_COMPUTED


def test_compute_lpips_from_a_weights_folder(tmp_path, alex):
    tensors = {k: v.clone() for k, v in alex.state_dict().items()}
    write_weights_folder(tmp_path, {"lpips_alex": tensors})
    gen = torch.Generator().manual_seed(5)
    x, y = torch.rand(2, 1, 32, 32, generator=gen), torch.rand(2, 1, 32, 32, generator=gen)
    torch.testing.assert_close(compute_lpips(x, y, weights_dir=tmp_path), compute_lpips(x, y, network=alex))


def test_compute_lpips_validates_inputs(alex):
    x = torch.rand(2, 1, 32, 32)
    with pytest.raises(ValueError, match="same shape"):
        compute_lpips(x, torch.rand(2, 1, 32, 31), network=alex)
    with pytest.raises(ValueError, match=r"\(B, 1, \*S\)"):
        compute_lpips(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), network=alex)
    with pytest.raises(ValueError, match="at least 31"):
        compute_lpips(torch.rand(2, 1, 30, 40), torch.rand(2, 1, 30, 40), network=alex)
    with pytest.raises(ValueError, match="net must be one of"):
        compute_lpips(x, x, net="squeeze")
