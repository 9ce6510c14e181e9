"""Run a trained model over a data split and keep what every evaluation needs."""

from __future__ import annotations

from dataclasses import dataclass

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


@torch.no_grad()
def predict(run: LoadedRun, dataset, batch_size: int = 16, progress: bool = False) -> Predictions:
    """Forward every sample of ``dataset`` through ``run.model`` in eval mode."""
    model = run.model.eval()
    device = next(model.parameters()).device
    n_attr = len(run.attribute_names)
    keep: dict[str, list] = {k: [] for k in ("images", "clean", "recon", "attributes", "latents", "raw", "labels",
                                             "ids", "slices", "density")}
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="predict", disable=not progress, leave=False):
        batch = default_collate([dataset[i] for i in range(start, min(len(dataset), start + batch_size))])
        x = batch["image"].to(device)
        out = model(x)
        if run.family == "attri_ssc":
            recon, pred = out.ssc.recon, out.attributes
            latents = model.mapper.features(out.ssc.codes)
            keep["density"].append(float(out.ssc.density) * x.shape[0])
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
    n = len(dataset)
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
        density=(sum(keep["density"]) / n) if keep["density"] else None,
    )
