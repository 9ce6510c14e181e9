"""Model families the trainer can run: Attri-SSC-VAE and the Attri-VAE baselines.

A family knows how to build its model, run it, turn an output into named loss terms for
a stage, and which tensor holds its attribute predictions. A registry dict maps names to
families (no if/elif chains in the trainer).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from attri_ssc.config import ExperimentConfig, StageSpec


#: Concatenates a (B, ...) tensor over all processes, differentiably (identity in one process).
Gather = Callable[[Tensor], Tensor]


class SSCFamily:
    """Attri-SSC-VAE: L_SSC + γ L_AR + L_GS(W) + μ‖W − W_stage2‖² as the stage asks."""

    name = "attri_ssc"

    def build(self, cfg: ExperimentConfig, n_attributes: int) -> nn.Module:
        from attri_ssc.models.attri_ssc_vae import AttriSSCVAE

        return AttriSSCVAE(cfg.model, n_attributes)

    def trainable_groups(self, model: nn.Module, stage: StageSpec, cfg: ExperimentConfig) -> list[dict[str, Any]]:
        model.mapper.weight.requires_grad_(stage.train_mapper)
        groups = [{"params": list(model.backbone.parameters()), "lr": stage.lr, "name": "backbone"}]
        if stage.train_mapper:
            groups.append({"params": [model.mapper.weight], "lr": cfg.train.mapper_lr or stage.lr, "name": "mapper"})
        return groups

    def loss_terms(self, model: nn.Module, out: Any, batch: dict[str, Tensor], stage: StageSpec,
                   cfg: ExperimentConfig, gather: Gather | None = None) -> dict[str, Tensor]:
        """Named, weighted loss terms; ``gather`` (several processes) makes L_AR compare all
        pairs of the global batch, as in one process, instead of each rank's own pairs."""
        from attri_ssc.losses import (attribute_regularization_loss, drift_penalty, group_sparsity_loss,
                                      ssc_loss_terms)

        terms = dict(ssc_loss_terms(batch["image"], out.ssc, cfg.model))
        if stage.train_mapper:
            # Always in the graph while W trains (γ may be 0 for the literal Eq. 14), so
            # DistributedDataParallel sees W used in every step.
            pred, target = out.attributes, batch["attributes"]
            if gather is not None:
                pred, target = gather(pred), gather(target)
            terms["ar"] = stage.gamma * attribute_regularization_loss(pred, target, delta=cfg.train.delta)
        weight = model.mapper.weight
        if stage.lambda_row > 0 or stage.lambda_col > 0:
            gs = group_sparsity_loss(weight, stage.lambda_row, stage.lambda_col, variant=cfg.train.gs_variant)
            terms["gs"] = gs / weight.numel() if cfg.train.gs_normalize else gs
        if stage.mu > 0:
            terms["drift"] = drift_penalty(weight, model.mapper.reference, stage.mu)
        return terms

    def after_backward(self, model: nn.Module) -> None:
        model.mapper.mask_gradient()

    def attribute_predictions(self, out: Any) -> Tensor:
        return out.attributes

    def reconstruction(self, out: Any) -> Tensor:
        return out.ssc.recon

    def step_stats(self, out: Any) -> dict[str, Tensor]:
        codes = out.ssc.codes.detach()
        live = (codes.abs().flatten(2).amax(dim=2).amax(dim=0) > 0).sum()
        return {"density": out.ssc.density, "live_atoms": live}


class BaselineFamily:
    """VAE, β-VAE, AR-VAE and Attri-VAE on the Attri-VAE backbone (one stage)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def build(self, cfg: ExperimentConfig, n_attributes: int) -> nn.Module:
        from attri_ssc.baselines.attri_vae import AttriVAE

        if getattr(cfg.model, "n_attributes", n_attributes) != n_attributes:
            raise ValueError(
                f"model.n_attributes={cfg.model.n_attributes} but the data supervises {n_attributes} attributes")
        return AttriVAE(cfg.model)

    def trainable_groups(self, model: nn.Module, stage: StageSpec, cfg: ExperimentConfig) -> list[dict[str, Any]]:
        return [{"params": list(model.parameters()), "lr": stage.lr, "name": "model"}]

    def loss_terms(self, model: nn.Module, out: Any, batch: dict[str, Tensor], stage: StageSpec,
                   cfg: ExperimentConfig, gather: Gather | None = None) -> dict[str, Tensor]:
        """Named, weighted loss terms; ``gather``: the AR term over the global batch (see SSCFamily)."""
        from attri_ssc.baselines.losses import baseline_loss_terms

        return dict(baseline_loss_terms(out, batch["image"], batch["attributes"], batch["label"], cfg.model,
                                        gather=gather))

    def after_backward(self, model: nn.Module) -> None:
        return None

    def attribute_predictions(self, out: Any) -> Tensor:
        return out.mu

    def reconstruction(self, out: Any) -> Tensor:
        return out.recon

    def step_stats(self, out: Any) -> dict[str, Tensor]:
        return {}


FAMILIES: dict[str, Any] = {
    "attri_ssc": SSCFamily(),
    **{name: BaselineFamily(name) for name in ("vae", "beta_vae", "ar_vae", "attri_vae")},
}


def post_step(model: nn.Module) -> None:
    """Call the model's post-step hook (dictionary projection, support mask) if it has one."""
    hook = getattr(model, "post_step", None)
    if hook is not None:
        with torch.no_grad():
            hook()
