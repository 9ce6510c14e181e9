"""Configuration of the SSC-VAE backbone (paper Section 3.1, Table 6).

``ModelConfig`` is a frozen dataclass: it is validated on construction, serialised into
every checkpoint (``to_dict``/``from_dict``) and never mutated. Three presets:

* ``paper``: Table 6 widths (128 at full resolution, 512 below), C' = 256, K = 512,
  T = 16, 3D input 80^3 (Attri-VAE's crop size).
* ``small``: trains on a 2-core CPU on 64x64 2D slices (widths 32/64, C' = 64, K = 128).
* ``tiny``: for unit tests (16^d inputs, a handful of channels).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from attri_ssc.dataclass_io import dataclass_to_dict, unknown_keys

#: Table 6's number of 2x downsamplings (four resolution levels S, S/2, S/4, S/8). The
#: backbone's depth is ``len(channels) - 1`` downsamplings: a config sets it.
N_DOWN = 3
DOWN_FACTOR = 2**N_DOWN

THRESHOLD_PARAMS = ("softplus", "square")
ALPHA_PENALTIES = ("detached", "learned", "global")
LATENT_NORMS = ("batch", "none")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an SSC-VAE.

    Args:
        spatial_dims: 2 (slices) or 3 (volumes).
        in_channels: image channels (1 for DE-MRI).
        channels: encoder widths, one per resolution level S, S/2, ..., S/2^(n-1); the
            number of entries n sets the depth (n - 1 downsamplings, latent size
            S/2^(n-1)). Table 6: (128, 512, 512, 512), four levels, latent S/8; a 64x64
            slice with three levels has a 16x16 latent.
        decoder_channels: decoder widths at the same levels (as many entries as
            ``channels``); ``None`` mirrors ``channels``. Table 6's decoder is
            (128, 128, 128, 512).
        latent_channels: C', channels of the features e and of each atom.
        n_atoms: K, number of dictionary atoms.
        n_iter: T, unrolled LISTA iterations (overridable per forward call).
        threshold_channels: width H of the threshold network's residual blocks. ``None``
            (Table 6): the blocks run on K channels. An integer H: conv C' -> H, two
            residual blocks on H, then a 1^d conv H -> K before the non-negative map (the
            blocks cost ~(H/K)² as much, which matters on a fine latent or a large K).
        norm_groups: GroupNorm groups; every GroupNorm'd width (channels, decoder
            channels, K) must be divisible by it.
        nonneg_codes: non-negative codes (one-sided soft threshold) instead of signed.
        threshold_param: how the raw threshold map is made non-negative before CBAM:
            ``softplus`` or ``square``.
        cbam_reduction: reduction ratio r of CBAM's channel MLP (K -> K/r -> K).
        cbam_kernel: kernel size of CBAM's spatial-attention conv (odd).
        alpha_penalty: sparsity term of L_latent. ``detached`` (default): sum of
            stop-grad(alpha+) * |Z| (keeps the penalty from driving alpha to 0);
            ``learned``: Eq. 3 literally, alpha+ * |Z| with gradient into alpha;
            ``global``: ``sparsity_lambda`` * |Z|.
        sparsity_lambda: the global lambda for ``alpha_penalty='global'``.
        loss_reduction: how L_recon and L_latent reduce over pixels and latent entries:
            ``mean`` (per-entry means) or ``sum`` (Eqs. 2–3 literally: squared norms and
            ℓ1 sums per sample, averaged over the batch). The choice sets how strongly the
            attribute terms (γ L_AR, mean-reduced) weigh against L_SSC.
        sparsity_weight: multiplier of the whole sparsity term of L_latent (>= 0; 1 is
            Eq. 3). Raising it trades reconstruction for sparser codes.
        latent_norm: normalisation of e at the encoder output: ``batch`` (BatchNorm
            without affine parameters, so the encoder cannot shrink e and Z together) or
            ``none``.
        lipschitz_margin: L = margin * sigma_max(D)^2 (>= 1).
        debias_steps: gradient steps on the least-squares fit ``½‖e − DZ‖²`` restricted to
            the support of LISTA's codes, after the T iterations (0 = the paper). The soft
            threshold shrinks every active code by α⁺/L; one step restores the last
            iteration's shrinkage exactly, more approach the least-squares values on the
            support. The support (hence the density) is unchanged.
        input_size: nominal input spatial size (int or one int per spatial dim), each
            divisible by ``2 ** (len(channels) - 1)``; used for validation and summaries
            (the model is fully convolutional).
    """

    spatial_dims: int = 2
    in_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 64, 64)
    decoder_channels: tuple[int, ...] | None = None
    latent_channels: int = 64
    n_atoms: int = 128
    n_iter: int = 16
    threshold_channels: int | None = None
    norm_groups: int = 8
    nonneg_codes: bool = False
    threshold_param: str = "softplus"
    cbam_reduction: int = 8
    cbam_kernel: int = 7
    alpha_penalty: str = "detached"
    sparsity_lambda: float = 0.1
    sparsity_weight: float = 1.0
    loss_reduction: str = "mean"
    latent_norm: str = "batch"
    lipschitz_margin: float = 1.001
    debias_steps: int = 0
    input_size: int | tuple[int, ...] = 64

    def __post_init__(self) -> None:
        # Normalise sequences to tuples (from_dict / YAML give lists).
        object.__setattr__(self, "channels", _as_int_tuple("channels", self.channels))
        if self.decoder_channels is not None:
            object.__setattr__(
                self, "decoder_channels", _as_int_tuple("decoder_channels", self.decoder_channels)
            )
        if isinstance(self.input_size, (list, tuple)):
            object.__setattr__(self, "input_size", _as_int_tuple("input_size", self.input_size))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field and its value."""
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got spatial_dims={self.spatial_dims!r}")
        _positive_int("in_channels", self.in_channels)
        _positive_int("latent_channels", self.latent_channels)
        if not isinstance(self.n_atoms, int) or isinstance(self.n_atoms, bool) or self.n_atoms < 1:
            raise ValueError(f"n_atoms (K) must be an integer >= 1, got n_atoms={self.n_atoms!r}")
        _positive_int("n_iter", self.n_iter)
        _positive_int("norm_groups", self.norm_groups)
        _positive_int("cbam_reduction", self.cbam_reduction)
        if len(self.channels) < 1:
            raise ValueError(
                f"channels must have at least one entry (one width per resolution level), "
                f"got channels={self.channels!r}"
            )
        if self.decoder_channels is not None and len(self.decoder_channels) != len(self.channels):
            raise ValueError(
                f"decoder_channels must have one width per resolution level, as many as channels "
                f"({len(self.channels)}), got decoder_channels={self.decoder_channels!r}"
            )
        for name in ("channels", "decoder_channels"):
            widths = getattr(self, name)
            if widths is None:
                continue
            for w in widths:
                _positive_int(name, w)
                if w % self.norm_groups:
                    raise ValueError(
                        f"{name} must be divisible by norm_groups={self.norm_groups}, "
                        f"got {name}={widths!r}"
                    )
        if self.n_atoms % self.norm_groups:
            raise ValueError(
                f"n_atoms must be divisible by norm_groups={self.norm_groups} (the threshold "
                f"network's residual blocks use GroupNorm on K channels), got n_atoms={self.n_atoms}"
            )
        if self.threshold_channels is not None:
            _positive_int("threshold_channels", self.threshold_channels)
            if self.threshold_channels % self.norm_groups:
                raise ValueError(
                    f"threshold_channels must be divisible by norm_groups={self.norm_groups}, "
                    f"got threshold_channels={self.threshold_channels}")
        if not isinstance(self.cbam_kernel, int) or self.cbam_kernel < 1 or self.cbam_kernel % 2 == 0:
            raise ValueError(f"cbam_kernel must be a positive odd integer, got cbam_kernel={self.cbam_kernel!r}")
        if self.threshold_param not in THRESHOLD_PARAMS:
            raise ValueError(
                f"threshold_param must be one of {THRESHOLD_PARAMS}, got threshold_param={self.threshold_param!r}"
            )
        if self.alpha_penalty not in ALPHA_PENALTIES:
            raise ValueError(
                f"alpha_penalty must be one of {ALPHA_PENALTIES}, got alpha_penalty={self.alpha_penalty!r}"
            )
        if self.latent_norm not in LATENT_NORMS:
            raise ValueError(f"latent_norm must be one of {LATENT_NORMS}, got latent_norm={self.latent_norm!r}")
        if not (float(self.sparsity_lambda) >= 0.0):
            raise ValueError(f"sparsity_lambda must be >= 0, got sparsity_lambda={self.sparsity_lambda!r}")
        if self.loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got loss_reduction={self.loss_reduction!r}")
        if not (float(self.sparsity_weight) >= 0.0):
            raise ValueError(f"sparsity_weight must be >= 0, got sparsity_weight={self.sparsity_weight!r}")
        if not (float(self.lipschitz_margin) >= 1.0):
            raise ValueError(f"lipschitz_margin must be >= 1, got lipschitz_margin={self.lipschitz_margin!r}")
        if not isinstance(self.debias_steps, int) or isinstance(self.debias_steps, bool) or self.debias_steps < 0:
            raise ValueError(f"debias_steps must be an integer >= 0, got debias_steps={self.debias_steps!r}")
        if not isinstance(self.nonneg_codes, bool):
            raise ValueError(f"nonneg_codes must be a bool, got nonneg_codes={self.nonneg_codes!r}")
        check_spatial_size(self.input_size, self.spatial_dims, name="input_size", factor=self.down_factor)

    # ------------------------------------------------------------------ derived
    @property
    def n_levels(self) -> int:
        """Number of resolution levels (``len(channels)``; Table 6: 4)."""
        return len(self.channels)

    @property
    def down_factor(self) -> int:
        """Total downsampling S / s: ``2 ** (n_levels - 1)`` (Table 6: 8)."""
        return 2 ** (self.n_levels - 1)

    @property
    def decoder_widths(self) -> tuple[int, ...]:
        """Decoder widths per level, S first (``decoder_channels`` or the mirror)."""
        return self.decoder_channels if self.decoder_channels is not None else self.channels

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Nominal spatial input shape, one entry per spatial dim."""
        if isinstance(self.input_size, tuple):
            return self.input_size
        return (int(self.input_size),) * self.spatial_dims

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Spatial shape of e and Z for the nominal input: ``input_shape // down_factor``."""
        return tuple(s // self.down_factor for s in self.input_shape)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return dataclass_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        unknown = unknown_keys(cls, d)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {unknown}")
        return cls(**d)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def check_spatial_size(size: Any, spatial_dims: int, name: str = "input_size",
                       factor: int = DOWN_FACTOR) -> tuple[int, ...]:
    """Validate a spatial size (int or one int per dim), each a positive multiple of ``factor``
    (the backbone's total downsampling, 8 for Table 6).

    Returns the size as a tuple; raises ``ValueError`` naming ``name`` and the value.
    """
    if isinstance(size, (list, tuple)):
        if len(size) != spatial_dims:
            raise ValueError(
                f"{name} must have {spatial_dims} entries for spatial_dims={spatial_dims}, got {name}={size!r}"
            )
        dims = tuple(size)
    else:
        dims = (size,) * spatial_dims
    for s in dims:
        if not isinstance(s, int) or isinstance(s, bool) or s < factor or s % factor:
            raise ValueError(
                f"{name} must be a positive multiple of {factor} (the backbone's 2x "
                f"downsamplings), got {name}={size!r}"
            )
    return tuple(int(s) for s in dims)


def _as_int_tuple(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a sequence of integers, got {name}={value!r}")
    return tuple(value)


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")


# ---------------------------------------------------------------------- presets
PRESETS: dict[str, dict[str, Any]] = {
    # Table 6 (widths 128/512, C' = 256, K = 512, T = 16), 3D 80^3 input.
    "paper": dict(
        spatial_dims=3,
        channels=(128, 512, 512, 512),
        decoder_channels=(128, 128, 128, 512),
        latent_channels=256,
        n_atoms=512,
        n_iter=16,
        norm_groups=32,
        cbam_reduction=16,
        input_size=80,
    ),
    # Trains on a 2-core CPU on 64x64 slices.
    "small": dict(
        spatial_dims=2,
        channels=(32, 64, 64, 64),
        decoder_channels=None,
        latent_channels=64,
        n_atoms=128,
        n_iter=16,
        norm_groups=8,
        cbam_reduction=8,
        input_size=64,
    ),
    # Unit tests: 16^d inputs, latent 2^d.
    "tiny": dict(
        spatial_dims=2,
        channels=(8, 8, 8, 8),
        decoder_channels=None,
        latent_channels=8,
        n_atoms=16,
        n_iter=4,
        norm_groups=4,
        cbam_reduction=4,
        cbam_kernel=3,
        input_size=16,
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset (``paper``, ``small``, ``tiny``) with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})
