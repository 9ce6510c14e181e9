"""Probe: why myocardium edits are hard, and a per-image variant of the hold-fixed groups.

Usage: python scripts/probes/myocardium_edit.py RUN [--near 0.3] [--quantile 0.8]

Prints, for the default edit (``shift`` with hold-fixed prototypes, top-k atoms of W):
the raw training attributes of the two groups that define the myocardium step, and the
judge's mean cavity / myocardium / wall thickness of the 24 held-out test slices at each α.
Then it verifies a per-image variant: for each edited image, the groups are taken among the
``--near`` fraction of training images whose held-fixed attribute is closest to the image's
*predicted* one (the model's â), split at the ``--quantile`` tails of the edited attribute.
Monotonicity and leakage are computed as in ``attri-ssc verify-edits``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from attri_ssc.commands.interpret import _split, load_run_and_data
from attri_ssc.interpret.editing import (alpha_grid, collect_codes, edit_codes, hold_fixed_indices,
                                          prototypes_from_codes, run_atom_bounds, select_atoms)
from attri_ssc.interpret.judge import measure_batch
from attri_ssc.interpret.sampling import decode_samples
from attri_ssc.interpret.verification import held_out_images, judged_names, summarise


def judged(backbone, codes, spacing, thickness, names) -> dict[str, np.ndarray]:
    got = measure_batch(decode_samples(backbone, codes), spacing, thickness)
    return {n: np.where(got["valid"] > 0, got[n], np.nan) for n in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--near", type=float, default=0.3)
    parser.add_argument("--quantile", type=float, default=0.8)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    run, bundle = load_run_and_data(args.run, None, "cpu")
    names = list(run.attribute_names)
    JUDGED = judged_names(names)
    cavity, myo = JUDGED[0], JUDGED[1]
    spacing = float(run.config.data.spacing_mm)
    held, scale = held_out_images(_split(bundle, "test"), bundle.cases, spacing, 24)
    backbone = run.model.backbone
    train_codes = collect_codes(backbone, bundle.train.images)
    attrs = bundle.train.attributes.double()
    raw = bundle.train.raw_attributes.double()
    hold = hold_fixed_indices(names)
    bounds = run_atom_bounds(run, bundle.train.images, bundle.train.case_ids, 99.0, codes=train_codes)
    protos = prototypes_from_codes(train_codes, attrs, 0.9, hold)
    codes = collect_codes(backbone, held.images)
    alphas = alpha_grid(9)
    weight = run.model.mapper.effective_weight()

    m = names.index(myo)
    o = hold[m][0]
    design = torch.cat([torch.ones(len(attrs), 1, dtype=attrs.dtype), attrs[:, [o]]], dim=1)
    resid = attrs[:, m] - (design @ torch.linalg.lstsq(design, attrs[:, m:m + 1]).solution).squeeze(1)
    hi, lo = resid >= torch.quantile(resid, 0.9), resid <= torch.quantile(resid, 0.1)
    print("raw attributes", names)
    print("  high group mean", raw[hi].mean(0).numpy().round(2), " low group mean", raw[lo].mean(0).numpy().round(2))
    sel = select_atoms(weight, m, run.config.train.top_k)
    print(f"myocardium edit (shift, hold-fixed), atoms {list(sel.atoms)}: judged means over the slices")
    for a in alphas.tolist():
        got = judged(backbone, edit_codes(codes, sel, bounds, a, "shift", prototypes=protos), spacing,
                     held.slice_thickness_mm, JUDGED)
        print(f"  α {a:+.2f}  " + "  ".join(f"{n} {np.nanmean(got[n]):.2f}" for n in JUDGED))

    predicted = run.model.mapper(codes).double()
    tz = train_codes.double()
    for attr in (cavity, myo):
        m = names.index(attr)
        o = hold[m][0]
        sel = select_atoms(weight, m, run.config.train.top_k)
        steps = []
        for i in range(codes.shape[0]):
            dist = (attrs[:, o] - predicted[i, o]).abs()
            near = dist <= torch.quantile(dist, args.near)
            values = attrs[near, m]
            up, down = near.clone(), near.clone()
            up[near] = values >= torch.quantile(values, args.quantile)
            down[near] = values <= torch.quantile(values, 1 - args.quantile)
            steps.append((tz[up].mean(0) - tz[down].mean(0)) / 2)
        step = torch.stack(steps).float()
        responses = {n: np.full((codes.shape[0], len(alphas)), np.nan) for n in JUDGED}
        responses["predicted"] = np.zeros((codes.shape[0], len(alphas)))
        for k, a in enumerate(alphas.tolist()):
            z = codes.clone()
            for j in sel.atoms:
                z[:, j] += a * step[:, j]
            got = judged(backbone, z, spacing, held.slice_thickness_mm, JUDGED)
            for n in JUDGED:
                responses[n][:, k] = got[n]
        res = summarise(responses, alphas.numpy().astype(np.float64), attr, scale)
        print(f"per-image groups (near {args.near}, quantile {args.quantile}) {attr}: "
              f"monotonicity {res['monotonicity']:.3f}, leakage {res['leakage']:.3f}")


if __name__ == "__main__":
    main()
