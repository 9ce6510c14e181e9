"""Run a trained model over a data split and keep what every evaluation needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate
from tqdm.auto import tqdm

from attri_ssc.runs import LoadedRun


@dataclass
class Predictions:
    """Per-sample arrays of one split, all on CPU.

    Attributes:
        images: inputs (N, 1, *S); clean: noise-free images when the data has them, else None.
        recon: reconstructions (N, 1, *S), clamped to [0, 1].
        attributes: predictions aligned with the supervised attributes (N, A): â for
            Attri-SSC-VAE, μ[:, :A] for the VAE baselines.
        latents: the representation disentanglement metrics read (N, D): K·ũ (atom
            usages) for Attri-SSC-VAE, μ for the VAEs.
        raw_attributes: ground truth in physical units (N, A); labels: N/P (N,).
        case_ids, slice_index: where each sample comes from.
        density: mean fraction of non-zero codes (Attri-SSC-VAE), else None.
        code_statistics: how the codes are sparse (Attri-SSC-VAE, else None); see
            :func:`code_statistics`.
    """

    images: Tensor
    clean: Tensor | None
    recon: Tensor
    attributes: Tensor
    latents: Tensor
    raw_attributes: Tensor
    labels: Tensor
    case_ids: list[str]
    slice_index: list[int]
    density: float | None
    code_statistics: dict[str, Any] | None = None


def code_statistics(codes: Tensor) -> dict[str, Any]:
    """How sparse codes Z (N, K, *s) are, beyond their density.

    A density of 0.25 can mean every location uses a quarter of the atoms, or that a quarter
    of the atoms are on everywhere and the rest never (a dense code over fewer atoms).

    Returns:
        ``density`` (fraction of non-zero entries), ``live_atoms`` (non-zero somewhere),
        ``always_on_atoms`` (non-zero at >= 99 % of locations), ``n_atoms`` (K) and
        ``active_per_location`` (10th, 50th and 90th percentiles of the number of non-zero
        atoms at a location).
    """
    active = codes != 0
    k = codes.shape[1]
    per_atom = active.transpose(0, 1).reshape(k, -1).double().mean(dim=1)  # (K,) fraction of locations
    per_location = active.sum(dim=1).flatten().double()  # (N·|s|,)
    q = torch.quantile(per_location, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {
        "density": float(active.double().mean()),
        "n_atoms": int(k),
        "live_atoms": int((per_atom > 0).sum()),
        "always_on_atoms": int((per_atom >= 0.99).sum()),
        "active_per_location": {"p10": float(q[0]), "p50": float(q[1]), "p90": float(q[2])},
    }


@torch.no_grad()
def predict(run: LoadedRun, dataset, batch_size: int = 16, progress: bool = False) -> Predictions:
    """Forward every sample of ``dataset`` through ``run.model`` in eval mode."""
    model = run.model.eval()
    device = next(model.parameters()).device
    n_attr = len(run.attribute_names)
    keep: dict[str, list] = {k: [] for k in ("images", "clean", "recon", "attributes", "latents", "raw", "labels",
                                             "ids", "slices", "codes")}
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="predict", disable=not progress, leave=False):
        batch = default_collate([dataset[i] for i in range(start, min(len(dataset), start + batch_size))])
        x = batch["image"].to(device)
        out = model(x)
        if run.family == "attri_ssc":
            recon, pred = out.ssc.recon, out.attributes
            latents = model.mapper.features(out.ssc.codes)
            keep["codes"].append(out.ssc.codes.float().cpu())
        else:
            recon, pred, latents = out.recon, out.mu[:, :n_attr], out.mu
        keep["images"].append(batch["image"])
        if "clean" in batch:
            keep["clean"].append(batch["clean"])
        keep["recon"].append(recon.float().clamp(0, 1).cpu())
        keep["attributes"].append(pred.float().cpu())
        keep["latents"].append(latents.float().cpu())
        keep["raw"].append(batch["raw_attributes"].float())
        keep["labels"].append(batch["label"])
        keep["ids"].extend(batch["case_id"])
        keep["slices"].extend(int(s) for s in batch["slice_index"])
    stats = code_statistics(torch.cat(keep["codes"])) if keep["codes"] else None
    return Predictions(
        images=torch.cat(keep["images"]),
        clean=torch.cat(keep["clean"]) if len(keep["clean"]) == len(keep["images"]) else None,
        recon=torch.cat(keep["recon"]),
        attributes=torch.cat(keep["attributes"]),
        latents=torch.cat(keep["latents"]),
        raw_attributes=torch.cat(keep["raw"]),
        labels=torch.cat(keep["labels"]),
        case_ids=keep["ids"],
        slice_index=keep["slices"],
        density=None if stats is None else stats["density"],
        code_statistics=stats,
    )
