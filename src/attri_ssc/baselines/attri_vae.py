"""The shared backbone of the four baselines: Attri-VAE's convolutional VAE, dims-generic.

Architecture after Cetin et al. (2022), "Attri-VAE", written for any ``spatial_dims``:

* encoder: ``len(encoder_channels)`` convolutions, kernel 3, padding 1, each followed by
  BatchNorm and ReLU; all but the last have stride 2 (80³ → 5³ with the defaults), the
  last has stride 1 and narrows to ``encoder_channels[-1]`` channels; flatten, dropout,
  MLP ``flat_dim → fc_dims`` (ReLU), then two linear heads for μ and log σ².
* decoder: linear ``latent → flat_dim`` (ReLU), unflatten to ``(C_b, *s)``, conv stride 1,
  one transposed conv (kernel 3, stride 2, output padding 1) per downsampling, two convs
  stride 1, sigmoid (images live in [0, 1]). BatchNorm + ReLU after every layer but the last.
* classifier (Attri-VAE only): MLP on z, ``latent → classifier_dims → 1`` with BatchNorm +
  ReLU on hidden layers; returns logits (the loss applies the sigmoid).

Layers followed by BatchNorm carry no bias (BatchNorm's shift makes it redundant; Attri-VAE
keeps one, whose gradient is exactly zero), so every parameter is trained.

The second output head is log σ² throughout: sampling uses σ = exp(½ log σ²) and the KL
term uses the same quantity (the public code mixes log σ and log σ²). The latent is
sampled only in training mode; in eval mode ``z = μ``, so evaluation is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attri_ssc.baselines.config import BaselineConfig
from attri_ssc.nn import factories


@dataclass
class VAEOutput:
    """Output of :meth:`AttriVAE.forward`.

    Attributes:
        recon: reconstruction in [0, 1], ``(B, C, *S)``.
        mu: posterior mean, ``(B, latent_dim)``.
        logvar: posterior log-variance log σ², ``(B, latent_dim)``.
        z: latent used by the decoder, ``(B, latent_dim)``: a reparameterised sample in
            training mode, ``mu`` in eval mode.
        logits: N/P classifier logits ``(B,)`` (positive = pathological), or ``None`` for
            variants without a classifier.
    """

    recon: Tensor
    mu: Tensor
    logvar: Tensor
    z: Tensor
    logits: Tensor | None = None


def _conv_bn_relu(spatial_dims: int, c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """conv (kernel 3, padding 1) → BatchNorm → ReLU; ``(B, c_in, *s) → (B, c_out, *s/stride)``."""
    return nn.Sequential(
        factories.conv(spatial_dims, c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        factories.batch_norm(spatial_dims, c_out),
        nn.ReLU(),
    )


def _up_bn_relu(spatial_dims: int, c_in: int, c_out: int) -> nn.Sequential:
    """transposed conv (kernel 3, stride 2) → BatchNorm → ReLU; ``(B, c_in, *s) → (B, c_out, *2s)``."""
    return nn.Sequential(
        factories.conv_transpose(
            spatial_dims, c_in, c_out, kernel_size=3, stride=2, padding=1, output_padding=1, bias=False
        ),
        factories.batch_norm(spatial_dims, c_out),
        nn.ReLU(),
    )


def _mlp(widths: list[int], batch_norm: bool) -> nn.Sequential:
    """Linear (→ BatchNorm1d) → ReLU for each consecutive pair in ``widths``."""
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        layers.append(nn.Linear(w_in, w_out, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(w_out))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class AttriVAE(nn.Module):
    """Convolutional VAE backbone shared by VAE, β-VAE, AR-VAE and Attri-VAE.

    Args:
        config: a validated :class:`BaselineConfig`; its ``variant`` decides whether the
            N/P classifier exists (Attri-VAE only). The loss lives outside the model
            (:func:`attri_ssc.baselines.losses.baseline_loss_terms`).
    """

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        if not isinstance(config, BaselineConfig):
            raise ValueError(f"config must be a BaselineConfig, got config={config!r}")
        config.validate()
        self.config = config
        d = config.spatial_dims
        enc = config.encoder_channels

        # Encoder: (B, C, *S) -> (B, enc[-1], *S/2**n_down) -> (B, flat_dim) -> (B, fc_dims[-1]).
        widths = [config.in_channels, *enc]
        strides = [2] * config.n_down + [1]
        self.encoder_conv = nn.Sequential(
            *(_conv_bn_relu(d, c_in, c_out, s) for c_in, c_out, s in zip(widths[:-1], widths[1:], strides))
        )
        self.encoder_dropout = nn.Dropout(config.dropout)
        self.encoder_fc = _mlp([config.flat_dim, *config.fc_dims], batch_norm=False)
        hidden = config.fc_dims[-1] if config.fc_dims else config.flat_dim
        self.fc_mu = nn.Linear(hidden, config.latent_dim)
        self.fc_logvar = nn.Linear(hidden, config.latent_dim)

        # Decoder: (B, latent) -> (B, flat_dim) -> (B, enc[-1], *s) -> (B, C, *S).
        dec = config.decoder_channels
        self.decoder_fc = _mlp([config.latent_dim, config.flat_dim], batch_norm=False)
        self.decoder_conv = nn.Sequential(
            _conv_bn_relu(d, enc[-1], dec[0], 1),
            *(_up_bn_relu(d, c_in, c_out) for c_in, c_out in zip(dec[: config.n_down], dec[1 : config.n_down + 1])),
            _conv_bn_relu(d, dec[-2], dec[-1], 1),
            factories.conv(d, dec[-1], config.in_channels, kernel_size=3, stride=1, padding=1),
            nn.Sigmoid(),
        )

        # N/P classifier on z (Attri-VAE): (B, latent) -> (B, 1) logits.
        self.classifier: nn.Module | None = None
        if config.uses_classifier:
            cls_widths = [config.latent_dim, *config.classifier_dims]
            self.classifier = nn.Sequential(
                _mlp(cls_widths, batch_norm=True), nn.Linear(cls_widths[-1], 1)
            )
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier-uniform weights and zero biases for conv/linear layers (as Attri-VAE);
        BatchNorm keeps its (1, 0) initialisation."""
        for module in self.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, nn.Parameter) and weight.dim() >= 2:  # conv, transposed conv, linear
                nn.init.xavier_uniform_(weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ parts
    def _check_input(self, x: Tensor) -> None:
        cfg = self.config
        expected = (cfg.in_channels, *cfg.input_size)
        if x.dim() != cfg.spatial_dims + 2 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, expected))}), got x.shape={tuple(x.shape)}")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters.

        Args:
            x: images ``(B, C, *S)`` in [0, 1].
        Returns:
            ``(mu, logvar)``, each ``(B, latent_dim)``; ``logvar`` is log σ².
        """
        self._check_input(x)
        h = self.encoder_conv(x)  # (B, C_b, *s)
        h = self.encoder_dropout(h.flatten(1))  # (B, flat_dim)
        h = self.encoder_fc(h)  # (B, fc_dims[-1])
        return self.fc_mu(h), self.fc_logvar(h)

    def reparameterize(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """``z = μ + exp(½ log σ²)·ε`` in training mode, ``z = μ`` in eval mode; ``(B, latent_dim)``."""
        if not self.training:
            return mu
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode(self, z: Tensor) -> Tensor:
        """Reconstruction ``(B, C, *S)`` in [0, 1] from latents ``z`` ``(B, latent_dim)``."""
        cfg = self.config
        if z.dim() != 2 or z.shape[1] != cfg.latent_dim:
            raise ValueError(f"z must have shape (B, {cfg.latent_dim}), got z.shape={tuple(z.shape)}")
        h = self.decoder_fc(z)  # (B, flat_dim)
        h = h.view(z.shape[0], cfg.encoder_channels[-1], *cfg.bottleneck_size)  # (B, C_b, *s)
        return self.decoder_conv(h)

    def classify(self, z: Tensor) -> Tensor | None:
        """N/P logits ``(B,)`` from ``z`` ``(B, latent_dim)``; ``None`` without a classifier."""
        if self.classifier is None:
            return None
        return self.classifier(z).squeeze(1)

    def forward(self, x: Tensor) -> VAEOutput:
        """Encode, sample (train) or take the mean (eval), decode and classify.

        Args:
            x: images ``(B, C, *S)`` in [0, 1].
        Returns:
            :class:`VAEOutput` with ``recon (B, C, *S)``, ``mu, logvar, z (B, latent_dim)``
            and ``logits (B,)`` or ``None``.
        """
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return VAEOutput(recon=self.decode(z), mu=mu, logvar=logvar, z=z, logits=self.classify(z))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode ``n`` draws from the prior N(0, I): images ``(n, C, *S)``."""
        device = self.fc_mu.weight.device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device)
        return self.decode(z)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["AttriVAE", "VAEOutput", "count_parameters"]
