"""Configuration of the four baselines (VAE, β-VAE, AR-VAE, Attri-VAE).

All four share one backbone, the convolutional VAE of Attri-VAE (Cetin et al., 2022,
"Attri-VAE: attribute-based interpretable representations of medical images with
variational autoencoders"), made dimension-generic. They differ only in which loss
terms are switched on and in their weights:

=========  =========================================================================
variant    loss
=========  =========================================================================
vae        recon + KL                                  (β = 1, Kingma & Welling)
beta_vae   recon + β·KL                                (β = 2, Higgins et al.)
ar_vae     recon + β·KL + γ·AR(z[:, :A], a; δ)         (Pati & Lerch, 2020)
attri_vae  recon + β·KL + γ·AR(z[:, :A], a; δ) + α·BCE(classifier(z), N/P label)
=========  =========================================================================

Default γ and δ. The Attri-VAE paper reports γ = 200, δ = 10; its public training script
uses γ = 10 with δ ("factor") = 100. We default to the paper (γ = 200, δ = 10):
(1) the Attri-SSC-VAE paper compares against the published method; (2) δ = 10 is the δ
of Attri-SSC-VAE itself (its Table 7), so the AR loss is the same function in both models
and AR values can be compared (paper Table 4); (3) with δ = 100, tanh saturates at
|z_p − z_q| ≈ 0.02, so the AR term is satisfied by a tiny latent spread and gives almost
no gradient beyond it. The code's values remain one ``dataclasses.replace`` away.
Measured (AR-VAE, 64×64 synthetic rings, A = 2: radius and wall thickness, 600 Adam steps
at lr 1e-3, batch 16, one seed; Spearman ρ of μ_0, μ_1 with the attributes on 128 held-out
images): γ = 200, δ = 10 gave ρ = 0.993 / 0.971 at 20.1 dB; γ = 10, δ = 100 gave
0.975 / 0.262 at 20.6 dB; β-VAE alone 21.0 dB.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from attri_ssc.dataclass_io import dataclass_to_dict, unknown_keys

#: Loss terms switched on by each variant (a table, not an if/elif chain).
VARIANT_TERMS: dict[str, tuple[str, ...]] = {
    "vae": ("recon", "kl"),
    "beta_vae": ("recon", "kl"),
    "ar_vae": ("recon", "kl", "ar"),
    "attri_vae": ("recon", "kl", "ar", "cls"),
}

#: β used when ``beta`` is left as ``None``.
DEFAULT_BETA: dict[str, float] = {"vae": 1.0, "beta_vae": 2.0, "ar_vae": 2.0, "attri_vae": 2.0}

#: Reconstruction likelihoods: Gaussian (squared error) or Bernoulli (binary cross-entropy).
RECON_LOSSES: tuple[str, ...] = ("mse", "bce")

_TUPLE_FIELDS = ("input_size", "encoder_channels", "decoder_channels", "fc_dims", "classifier_dims")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class BaselineConfig:
    """One baseline: architecture of the shared backbone plus the variant's loss weights.

    Args:
        variant: one of ``'vae'``, ``'beta_vae'``, ``'ar_vae'``, ``'attri_vae'``.
        spatial_dims: 2 (slices) or 3 (volumes).
        input_size: spatial size ``S`` of the input ``(B, in_channels, *S)``, one entry per
            spatial dim; each must be divisible by ``2 ** (len(encoder_channels) - 1)``
            (16 by default). Attri-VAE uses 80³; the CPU demo 64×64.
        in_channels: image channels (1 for MRI).
        encoder_channels: output channels of the encoder convolutions (kernel 3). All but
            the last have stride 2; the last has stride 1 and sets the width of the
            flattened bottleneck. Default (8, 16, 32, 64, 2) as Attri-VAE; at 80³ the
            bottleneck is 2·5³ = 250 features, at 64×64 only 2·4² = 32.
        decoder_channels: ``(c0, c1, ..., cn, c_last)`` with n = number of downsamplings.
            The decoder is: linear(latent → bottleneck), unflatten, conv(→c0, stride 1),
            n transposed convs c0→c1→…→cn (stride 2), conv(cn→c_last), conv(c_last →
            in_channels), sigmoid. Default (64, 64, 32, 16, 8, 4) as Attri-VAE.
        fc_dims: hidden widths of the encoder MLP between the flattened bottleneck and the
            μ / log σ² heads. Default (128, 96): Attri-VAE's 250→128→96.
        latent_dim: size of z (64).
        dropout: dropout on the flattened bottleneck in training (Attri-VAE: 0.25).
        beta: KL weight; ``None`` means the variant's default (1 for ``vae``, 2 otherwise).
            ``vae`` must have β = 1 (otherwise it is a β-VAE).
        gamma: AR-loss weight γ (AR variants only). Default 200, see the module docstring.
        delta: AR-loss tanh scale δ (AR variants only). Default 10.
        n_attributes: number A of regularised attributes; latent dims 0..A−1 carry them.
            AR variants need 1 ≤ A ≤ latent_dim; the plain VAEs ignore it.
        classifier_dims: hidden widths of the N/P classifier on z (Attri-VAE only);
            default (32, 16): 64→32→16→1, each hidden layer BatchNorm + ReLU.
        cls_weight: weight α of the classifier's binary cross-entropy (Attri-VAE: 1).
        recon_loss: ``'mse'`` (Gaussian; Attri-VAE's choice) or ``'bce'`` (Bernoulli). Both
            are summed over voxels and averaged over the batch, like the KL term.
    """

    variant: str
    spatial_dims: int = 2
    input_size: tuple[int, ...] = (64, 64)
    in_channels: int = 1
    encoder_channels: tuple[int, ...] = (8, 16, 32, 64, 2)
    decoder_channels: tuple[int, ...] = (64, 64, 32, 16, 8, 4)
    fc_dims: tuple[int, ...] = (128, 96)
    latent_dim: int = 64
    dropout: float = 0.25
    beta: float | None = None
    gamma: float = 200.0
    delta: float = 10.0
    n_attributes: int = 4
    classifier_dims: tuple[int, ...] = (32, 16)
    cls_weight: float = 1.0
    recon_loss: str = "mse"

    def __post_init__(self) -> None:
        if self.beta is None and self.variant in DEFAULT_BETA:
            # Resolve the variant's default once, at construction; the config stays frozen.
            object.__setattr__(self, "beta", DEFAULT_BETA[self.variant])
        self.validate()

    # ------------------------------------------------------------------ derived values
    @property
    def terms(self) -> tuple[str, ...]:
        """Loss terms this variant uses, e.g. ``('recon', 'kl', 'ar')``."""
        return VARIANT_TERMS[self.variant]

    @property
    def uses_ar(self) -> bool:
        return "ar" in self.terms

    @property
    def uses_classifier(self) -> bool:
        return "cls" in self.terms

    @property
    def n_down(self) -> int:
        """Number of stride-2 encoder convolutions (4 by default)."""
        return len(self.encoder_channels) - 1

    @property
    def bottleneck_size(self) -> tuple[int, ...]:
        """Spatial size ``s = S / 2**n_down`` of the lowest-resolution feature map."""
        return tuple(s // 2**self.n_down for s in self.input_size)

    @property
    def flat_dim(self) -> int:
        """Width of the flattened bottleneck, ``encoder_channels[-1] · prod(s)``."""
        return self.encoder_channels[-1] * math.prod(self.bottleneck_size)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad argument and its value."""
        if self.variant not in VARIANT_TERMS:
            raise ValueError(f"variant must be one of {sorted(VARIANT_TERMS)}, got variant={self.variant!r}")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got spatial_dims={self.spatial_dims!r}")
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(_is_int(v) and v > 0 for v in value):
                raise ValueError(f"{name} must be a tuple of positive ints, got {name}={value!r}")
        if len(self.input_size) != self.spatial_dims:
            raise ValueError(
                f"input_size must have spatial_dims={self.spatial_dims} entries, got input_size={self.input_size!r}"
            )
        if len(self.encoder_channels) < 2:
            raise ValueError(
                f"encoder_channels needs at least 2 entries, got encoder_channels={self.encoder_channels!r}"
            )
        factor = 2**self.n_down
        if any(s % factor for s in self.input_size):
            raise ValueError(
                f"input_size must be divisible by {factor} (2**{self.n_down} downsamplings) in every dim, "
                f"got input_size={self.input_size!r}"
            )
        if len(self.decoder_channels) != self.n_down + 2:
            raise ValueError(
                f"decoder_channels must have n_down + 2 = {self.n_down + 2} entries, "
                f"got decoder_channels={self.decoder_channels!r}"
            )
        if not _is_int(self.in_channels) or self.in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got in_channels={self.in_channels!r}")
        if not _is_int(self.latent_dim) or self.latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive int, got latent_dim={self.latent_dim!r}")
        if not (_is_number(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got dropout={self.dropout!r}")
        for name in ("beta", "gamma", "cls_weight"):
            value = getattr(self, name)
            if not (_is_number(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}")
        if self.variant == "vae" and self.beta != 1.0:
            raise ValueError(f"variant 'vae' has beta=1 by definition (use 'beta_vae'), got beta={self.beta!r}")
        if not (_is_number(self.delta) and self.delta > 0):
            raise ValueError(f"delta must be a finite number > 0, got delta={self.delta!r}")
        if not _is_int(self.n_attributes) or self.n_attributes < 0:
            raise ValueError(f"n_attributes must be an int >= 0, got n_attributes={self.n_attributes!r}")
        if self.uses_ar and not 1 <= self.n_attributes <= self.latent_dim:
            raise ValueError(
                f"variant {self.variant!r} regularises latent dims 0..n_attributes-1, so it needs "
                f"1 <= n_attributes <= latent_dim={self.latent_dim}, got n_attributes={self.n_attributes!r}"
            )
        if self.recon_loss not in RECON_LOSSES:
            raise ValueError(f"recon_loss must be one of {RECON_LOSSES}, got recon_loss={self.recon_loss!r}")

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return dataclass_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BaselineConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = unknown_keys(cls, data)
        if unknown:
            raise ValueError(f"unknown BaselineConfig keys: {unknown}")
        kwargs = {k: (tuple(v) if k in _TUPLE_FIELDS and isinstance(v, list) else v) for k, v in data.items()}
        return cls(**kwargs)


__all__ = ["BaselineConfig", "VARIANT_TERMS", "DEFAULT_BETA", "RECON_LOSSES"]
