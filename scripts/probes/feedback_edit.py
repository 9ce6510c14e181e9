"""Probe: a closed-loop edit of the top-k atoms, steered by the model's own re-encoding.

Usage: python scripts/probes/feedback_edit.py RUN [--tau 0.75] [--steps 60] [--lr 0.05] [--l2 0.0]

For each held-out slice and each sign s of α, find Δ_s on the top-k atoms of W (the other atoms
untouched) such that the decoded edit, encoded again, reads â_target + s·τ·σ and leaves the
held-fixed attributes where the reconstruction reads them; then Z'(α) = Z + |α| Δ_sign(α).
Monotonicity and leakage are measured by the model-free judge as in ``attri-ssc verify-edits``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from attri_ssc.commands.interpret import _split, load_run_and_data
from attri_ssc.interpret.editing import alpha_grid, collect_codes, hold_fixed_indices, select_atoms
from attri_ssc.interpret.judge import measure_batch
from attri_ssc.interpret.sampling import decode_samples
from attri_ssc.interpret.verification import held_out_images, judged_names, summarise


def reread(model, z: torch.Tensor, noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    x = model.backbone.decode_codes(z).clamp(0.0, 1.0)
    xn = x + noise * torch.randn_like(x) if noise else x
    return model.mapper(model.backbone(xn).codes), x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--tau", type=float, default=0.75)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--noise", type=float, default=0.0, help="noise added before re-encoding")
    parser.add_argument("--only", default=None, help="edit only this attribute")
    parser.add_argument("--image", type=float, default=0.0, help="weight of the mean squared image change")
    parser.add_argument("--hold-infarct", action="store_true", help="hold the infarct's re-read value too")
    parser.add_argument("--save", type=Path, help="write the edited images to this .npz")
    parser.add_argument("--path", action="store_true", help="also ask α = ±0.5 to reach half the goal")
    args = parser.parse_args()
    run, bundle = load_run_and_data(args.run, None, "cpu")
    model = run.model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    names = list(run.attribute_names)
    judged = judged_names(names)
    spacing = float(run.config.data.spacing_mm)
    held, scale = held_out_images(_split(bundle, "test"), bundle.cases, spacing, 24)
    codes = collect_codes(model.backbone, held.images)
    sd = bundle.train.attributes.double().std(0).float()
    hold = hold_fixed_indices(names)
    alphas = alpha_grid(9)
    weight = model.mapper.effective_weight()
    saved = {"inputs": held.images.numpy()}
    for attr in ([args.only] if args.only else judged[:2]):
        m = names.index(attr)
        keep = list(hold.get(m, ()))
        if args.hold_infarct:
            keep += [i for i, n in enumerate(names) if n.startswith("infarct")]
        sel = select_atoms(weight, m, run.config.train.top_k)
        atoms = list(sel.atoms)
        t0 = time.time()
        with torch.no_grad():
            base, x0 = reread(model, codes)
        deltas = {}
        for s in (1.0, -1.0):
            delta = torch.zeros(codes.shape[0], len(atoms), *codes.shape[2:], requires_grad=True)
            opt = torch.optim.Adam([delta], lr=args.lr)
            goal = base[:, m] + s * args.tau * sd[m]
            fractions = (1.0, 0.5) if args.path else (1.0,)
            for _ in range(args.steps):
                loss = args.l2 * delta.pow(2).mean()
                for f in fractions:
                    z = codes.clone()
                    z[:, atoms] = z[:, atoms] + f * delta
                    a, x = reread(model, z, args.noise)
                    loss = loss + args.image * (x - x0).pow(2).mean()
                    loss = loss + ((a[:, m] - (base[:, m] + f * (goal - base[:, m]))) / sd[m]).pow(2).mean()
                    for o in keep:
                        loss = loss + ((a[:, o] - base[:, o]) / sd[o]).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            deltas[s] = delta.detach()
            with torch.no_grad():
                print(f"  {attr} s={s:+.0f}: re-read Δ target {((a[:, m] - base[:, m]) / sd[m]).mean():+.3f} sd, "
                      f"held {[float(((a[:, o] - base[:, o]) / sd[o]).abs().mean()) for o in keep]}, "
                      f"|Δ| {deltas[s].abs().mean():.3f} vs |Z| {codes[:, atoms].abs().mean():.3f}")
        responses = {n: np.full((codes.shape[0], len(alphas)), np.nan) for n in judged}
        responses["predicted"] = np.zeros((codes.shape[0], len(alphas)))
        edits = []
        for k, a in enumerate(alphas.tolist()):
            z = codes.clone()
            if a != 0:
                z[:, atoms] = z[:, atoms] + abs(a) * deltas[1.0 if a > 0 else -1.0]
            decoded = decode_samples(model.backbone, z)
            edits.append(decoded.numpy())
            got = measure_batch(decoded, spacing, held.slice_thickness_mm)
            for n in judged:
                responses[n][:, k] = np.where(got["valid"] > 0, got[n], np.nan)
        if args.save:
            saved[attr] = np.stack(edits, 1)
        res = summarise(responses, alphas.numpy().astype(np.float64), attr, scale)
        print(f"feedback tau {args.tau} {attr}: monotonicity {res['monotonicity']:.3f} (median "
              f"{res['monotonicity_median']:.2f}), leakage {res['leakage']:.3f}, all {res['leakage_all']:.3f}, "
              f"change {res['target_change_per_unit_alpha_range']:.2f}  [{time.time() - t0:.0f}s]")
        print("  per-image ρ", " ".join(f"{r:.1f}" for r in res["per_image_monotonicity"]))
        for i, r in enumerate(res["per_image_monotonicity"]):
            if r is not None and r < 0.5:
                print(f"   image {i} ({held.case_ids[i]} slice {held.slice_index[i]}):",
                      " | ".join(f"{n} " + " ".join(f"{v:.1f}" for v in responses[n][i]) for n in judged))
    if args.save:
        np.savez_compressed(args.save, **saved)


if __name__ == "__main__":
    main()
