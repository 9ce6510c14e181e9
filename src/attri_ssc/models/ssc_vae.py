"""SSC-VAE backbone (paper Section 3.1, Table 6): encoder, attentive LISTA, decoder.

``x -> e = E(x) -> (Z, α⁺) = LISTA(e) -> DZ -> x̂ = G(DZ)``. The decoder reconstructs
from the coded features DZ (Eq. 2's G(E(X)) read as "decode the coded features").
Not variational in the KL sense (neither public SC-VAE nor SSC-VAE code has a KL term).
"""

from __future__ import annotations

import torch
from torch import nn

from attri_ssc.models.config import ModelConfig
from attri_ssc.models.decoder import Decoder
from attri_ssc.models.encoder import Encoder
from attri_ssc.models.outputs import SSCOutput, code_density
from attri_ssc.models.sparse_coder import AttentiveLISTA


class SSCVAE(nn.Module):
    """The SSC-VAE. Build with a validated :class:`ModelConfig`.

    Shapes: x ``(B, C_in, *S)`` with every S divisible by 2^(n − 1); e ``(B, C', *s)``,
    Z and α⁺ ``(B, K, *s)`` with s = S / 2^(n − 1) for n = len(config.channels) levels.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ValueError(f"config must be a ModelConfig, got config={type(config).__name__}")
        self.config = config
        self.encoder = Encoder(config)
        self.sparse_coder = AttentiveLISTA(config)
        self.decoder = Decoder(config)

    # ------------------------------------------------------------------ parts
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """e = E(x): ``(B, C_in, *S) -> (B, C', *s)``."""
        return self.encoder(x)

    def sparse_code(self, e: torch.Tensor, n_iter: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(Z, α⁺), both ``(B, K, *s)``, from e ``(B, C', *s)``; ``n_iter`` overrides T."""
        return self.sparse_coder(e, n_iter)

    def dictionary(self) -> torch.Tensor:
        """D ``(C', K)`` with unit-norm columns (differentiable)."""
        return self.sparse_coder.dictionary()

    def apply_dictionary(self, codes: torch.Tensor) -> torch.Tensor:
        """DZ: ``(B, K, *s) -> (B, C', *s)``."""
        b, k = codes.shape[:2]
        if k != self.config.n_atoms:
            raise ValueError(f"codes must have K={self.config.n_atoms} channels, got codes.shape={tuple(codes.shape)}")
        coded = torch.matmul(self.dictionary(), codes.reshape(b, k, -1))  # (B, C', N)
        return coded.reshape(b, -1, *codes.shape[2:])

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """x̂ = G(DZ): ``(B, K, *s) -> (B, C_in, *S)`` (editing, interpolation, sampling)."""
        return self.decoder(self.apply_dictionary(codes))

    def lipschitz(self) -> torch.Tensor:
        """L >= σ_max(D)² used as the LISTA step constant (detached 0-d tensor)."""
        return self.sparse_coder.lipschitz()

    @torch.no_grad()
    def post_step(self) -> None:
        """Call after each optimiser step: renormalise the stored atoms to unit norm."""
        self.sparse_coder.dictionary.project_()

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, n_iter: int | None = None) -> SSCOutput:
        """Full pass; ``n_iter`` overrides the number of LISTA iterations T."""
        if x.dim() != self.config.spatial_dims + 2:
            raise ValueError(
                f"x must be (B, C, *spatial) with {self.config.spatial_dims} spatial dims, "
                f"got x.shape={tuple(x.shape)}"
            )
        e = self.encode(x)
        z, alpha = self.sparse_code(e, n_iter)
        coded = self.apply_dictionary(z)
        recon = self.decoder(coded)
        return SSCOutput(recon=recon, features=e, codes=z, thresholds=alpha, coded=coded,
                         density=code_density(z))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by component: encoder, dictionary, thresholds, decoder."""
        return {
            "encoder": list(self.encoder.parameters()),
            "dictionary": list(self.sparse_coder.dictionary.parameters()),
            "thresholds": list(self.sparse_coder.thresholds.parameters()),
            "decoder": list(self.decoder.parameters()),
        }
