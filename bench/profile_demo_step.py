"""Where a demo training step's time goes: encoder, threshold net, LISTA, decoder, AR terms, Adam.

For a model config (``--set model.KEY=VALUE`` on top of the demo-2d preset's model) at the
demo's batch (4×1×64×64), one thread: each component's forward+backward is timed alone, at
its own input shapes, in interleaved rounds, plus the whole step (forward, Stage II loss
terms, backward, Adam). Reported per component: median **CPU** ms per round (process CPU
time: on a shared machine it leaves out the time spent waiting for a core, so shares stay
meaningful under contention; wall ms is printed too but only means something on a quiet
machine) and its share of the sum of components. The data batch (the trainer's cached
``BatchSchedule``) is measured by ``bench_data.py``.

Usage: ``python bench/profile_demo_step.py [--rounds 7] [--set model.channels=[16,32,64] ...]``;
prints JSON lines.
"""

from __future__ import annotations

import argparse

import torch

import _common as C
from attri_ssc.config import load_config
from attri_ssc.losses import attribute_regularization_loss, ssc_loss_terms
from attri_ssc.models.attri_ssc_vae import AttriSSCVAE
from attri_ssc.models.sparse_coder import debias_on_support, lipschitz_constant, lista


def components(model: AttriSSCVAE, x: torch.Tensor, attrs: torch.Tensor, delta: float) -> dict:
    """name -> a function running that component's forward+backward alone."""
    bb = model.backbone
    cfg = bb.config
    with torch.no_grad():
        out = bb(x)
    e = out.features.detach().requires_grad_(True)
    coded = out.coded.detach().requires_grad_(True)
    codes = out.codes.detach().requires_grad_(True)
    alpha = out.thresholds.detach().requires_grad_(True)
    x_grad = x.clone().requires_grad_(True)

    def clear() -> None:
        for t in (e, coded, codes, alpha, x_grad):
            t.grad = None
        model.zero_grad(set_to_none=True)

    def encoder() -> None:
        bb.encoder(x_grad).sum().backward()
        clear()

    def threshold_net() -> None:
        bb.sparse_coder.thresholds(e).sum().backward()
        clear()

    def lista_iterations() -> None:
        D = bb.sparse_coder.dictionary()
        b, c = e.shape[:2]
        L = lipschitz_constant(D, cfg.lipschitz_margin)
        z = lista(e.reshape(b, c, -1), D, alpha.reshape(b, alpha.shape[1], -1), cfg.n_iter, L, cfg.nonneg_codes)
        z = debias_on_support(e.reshape(b, c, -1), D, z, cfg.debias_steps, L, cfg.nonneg_codes)
        z.sum().backward()
        clear()

    def decoder() -> None:
        bb.decoder(coded).sum().backward()
        clear()

    def ar_terms() -> None:
        pred = model.mapper(codes)
        attribute_regularization_loss(pred, attrs, delta).backward()
        clear()

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def full_step() -> None:
        o = model(x)
        terms = ssc_loss_terms(x, o.ssc, cfg)
        loss = sum(terms.values()) + 5.0 * attribute_regularization_loss(o.attributes, attrs, delta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.post_step()

    return {"encoder": encoder, "threshold_net": threshold_net, "lista": lista_iterations, "decoder": decoder,
            "ar_terms": ar_terms, "full_step": full_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="override the demo-2d config (e.g. model.channels=[16,32,64])")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = load_config("demo-2d", args.overrides)
    model = AttriSSCVAE(cfg.model, len(cfg.data.attributes)).train()
    x = torch.rand(cfg.train.batch_size, 1, *cfg.model.input_shape)
    attrs = torch.randn(cfg.train.batch_size, len(cfg.data.attributes))
    fns = components(model, x, attrs, cfg.train.delta)
    times = C.interleaved(fns, args.rounds, warmup=1)
    parts = [n for n in fns if n != "full_step"]
    total_cpu = sum(C.median(times.cpu[n]) for n in parts)
    for name in fns:
        cpu = C.median(times.cpu[name])
        C.emit({"bench": "demo_step", "component": name, "overrides": args.overrides,
                "latent": list(cfg.model.latent_shape), **C.summary(times, name),
                "share_of_components_cpu": None if name == "full_step" else round(cpu / total_cpu, 3),
                "rounds": args.rounds})
    C.emit({"bench": "demo_step", "component": "sum_of_components", "cpu_ms": round(1e3 * total_cpu, 2),
            "full_step_cpu_ms": round(1e3 * C.median(times.cpu["full_step"]), 2)})


if __name__ == "__main__":
    main()
