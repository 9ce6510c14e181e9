"""Probe: Stage I alone on the demo phantoms: val PSNR vs clean, code density, live atoms.

Usage: python scripts/probes/stage1_sparsity.py DATA_DIR [--lr 1e-4] [--steps 500] [--batch 4]
       [--set model.sparsity_weight=2 ...]
Measured for the README ("Deviations"): sparsity_weight 1 / 2 / 5 → density after 500 steps.
"""

from __future__ import annotations

import argparse
import time

import torch

from attri_ssc.config import load_config
from attri_ssc.data.datasets import build_datasets
from attri_ssc.losses import ssc_loss_terms
from attri_ssc.models.ssc_vae import SSCVAE
from attri_ssc.seeding import set_seed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("data", help="EMIDEC-layout phantom folder")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = load_config("demo-2d", args.overrides)
    bundle = build_datasets(args.data, cfg.data)  # data.split_seed, as the trainer
    train, val, val_clean = bundle.train.images, bundle.val.images[:64], bundle.val.clean[:64]
    set_seed(0)
    model = SSCVAE(cfg.model)
    opt = torch.optim.Adam(model.parameters(), args.lr)
    gen = torch.Generator().manual_seed(0)
    start = time.time()
    for step in range(1, args.steps + 1):
        x = train[torch.randint(0, len(train), (args.batch,), generator=gen)]
        out = model(x)
        loss = sum(ssc_loss_terms(x, out, model.config).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.post_step()
        if step % 100 == 0:
            model.eval()
            with torch.no_grad():
                o = model(val)
                mse = ((o.recon.clamp(0, 1) - val_clean) ** 2).flatten(1).mean(1)
                psnr = float((10 * torch.log10(1 / mse)).mean())
                live = int((o.codes.abs().flatten(2).amax(2).amax(0) > 0).sum())
            model.train()
            print(f"step {step} ({time.time() - start:.0f} s): val PSNR vs clean {psnr:.2f} dB, "
                  f"density {float(o.density):.3f}, live atoms {live}/{cfg.model.n_atoms}", flush=True)


if __name__ == "__main__":
    main()
