"""Short training runs: code density and ||e|| under alpha-penalty modes and latent norms."""
import sys, time, json
import numpy as np, torch
from attri_ssc.seeding import set_seed
from attri_ssc.models.config import preset
from attri_ssc.models.ssc_vae import SSCVAE
from attri_ssc.losses import ssc_loss_terms

def rings(n, size=64, rng=None):
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    out = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        cx, cy = rng.uniform(-6, 6, 2)
        r = np.hypot(xx - cx, yy - cy)
        rc, w = rng.uniform(6, 14), rng.uniform(3, 7)
        img = 0.3 * (r < rc) + 0.8 * ((r >= rc) & (r < rc + w)) + 0.1
        img += 0.04 * rng.standard_normal(img.shape)
        out[i, 0] = img
    return torch.from_numpy(out)

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 150
results = {}
for mode, norm in [("detached", "batch"), ("learned", "batch"), ("detached", "none"), ("global", "batch")]:
    set_seed(0)
    cfg = preset("small", alpha_penalty=mode, latent_norm=norm, sparsity_lambda=0.1)
    model = SSCVAE(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4 * 3)
    rng = np.random.default_rng(0)
    data = rings(256, rng=rng)
    t0 = time.time()
    hist = []
    for it in range(steps):
        x = data[torch.randint(0, 256, (8,))]
        out = model(x)
        terms = ssc_loss_terms(x, out, cfg)
        loss = sum(terms.values())
        opt.zero_grad(); loss.backward(); opt.step(); model.post_step()
        if it % 25 == 0 or it == steps - 1:
            rec = dict(it=it, **{k: round(float(v.detach()), 5) for k, v in terms.items()},
                       density=round(float(out.density), 4),
                       e_rms=round(float(out.features.detach().pow(2).mean().sqrt()), 4),
                       alpha_mean=round(float(out.thresholds.detach().mean()), 4),
                       z_abs=round(float(out.codes.detach().abs().mean()), 4))
            hist.append(rec)
            print(mode, norm, rec, flush=True)
    results[f"{mode}/{norm}"] = dict(final=hist[-1], seconds=time.time() - t0)
json.dump(results, open("probe_alpha_penalty.json", "w"), indent=1)
