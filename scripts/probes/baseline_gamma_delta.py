"""Probe: γ/δ defaults for AR-VAE at 64×64 2D on synthetic rings (radius, thickness)."""
import sys, time, torch, numpy as np
from scipy.stats import spearmanr
from attri_ssc.baselines import build_baseline, baseline_loss_terms, total_loss
from attri_ssc.losses import attribute_regularization_loss
torch.set_num_threads(1)

def rings(n, g):
    r = torch.rand(n, generator=g) * 14 + 8        # cavity radius, px
    t = torch.rand(n, generator=g) * 5 + 2         # wall thickness
    cx = 32 + torch.randn(n, generator=g) * 2; cy = 32 + torch.randn(n, generator=g) * 2
    yy, xx = torch.meshgrid(torch.arange(64.), torch.arange(64.), indexing="ij")
    d = ((xx[None] - cx[:, None, None])**2 + (yy[None] - cy[:, None, None])**2).sqrt()
    img = 0.1 + 0.7 * (d < r[:, None, None]).float() + 0.3 * ((d >= r[:, None, None]) & (d < (r + t)[:, None, None])).float()
    img = (img + 0.03 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    a = torch.stack([(r - 8) / 14, (t - 2) / 5], 1)
    return img[:, None], a

g = torch.Generator().manual_seed(0)
xtr, atr = rings(512, g); xte, ate = rings(128, g)
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
for name, kw in [("beta_vae", {}), ("ar_vae", dict(gamma=200.0, delta=10.0)), ("ar_vae", dict(gamma=10.0, delta=100.0)), ("ar_vae", dict(gamma=10.0, delta=10.0))]:
    torch.manual_seed(0)
    model = build_baseline(name, n_attributes=2, **kw); cfg = model.config
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.time()
    for s in range(steps):
        idx = torch.randint(0, 512, (16,))
        x, a = xtr[idx], atr[idx]
        terms = baseline_loss_terms(model(x), x, a, None, cfg)
        opt.zero_grad(); total_loss(terms).backward(); opt.step()
    model.eval()
    with torch.no_grad():
        out = model(xte)
    mse = ((out.recon - xte)**2).mean().item()
    rho = [spearmanr(out.mu[:, i].numpy(), ate[:, i].numpy())[0] for i in range(2)]
    ar10 = attribute_regularization_loss(out.mu[:, :2], ate, delta=10.0).item()
    print(f"{name} {kw} steps={steps} mse={mse:.4f} psnr={10*np.log10(1/mse):.1f} rho_r={rho[0]:.3f} rho_t={rho[1]:.3f} AR(δ=10)={ar10:.3f} "
          f"last terms={ {k: round(v.item(), 2) for k, v in terms.items()} } {time.time()-t0:.0f}s", flush=True)
