"""LISTA and the attentive threshold network against the machine's own GEMM and conv rates.

Measures, in one process and interleaved rounds:

* ``gemm``: the machine's fp32 GEMM rate at LISTA's sizes (K×K by K×M with K = 512 and
  M = B·N = 1024, in the three layouts one iteration uses forward and backward);
* ``lista``: forward+backward of :func:`attri_ssc.models.sparse_coder.lista` at B = 4,
  C' = 256, K = 512, 16×16 locations, T = 16, fp32, and of :func:`lista_reference`
  (plain autograd, the implementation before the fused one); ms, GFLOP/s on the
  iterations' FLOPs (3·(T−1)·2K²M: one GEMM forward and two backward per iteration),
  ratio to the GEMM rate (target >= 0.70);
* ``threshold_net``: the attentive threshold network alone (conv C'→K, two residual
  blocks, CBAM) at the same shapes, forward+backward: ms, GFLOP/s on FlopCounterMode's
  count, ratio to the reference conv rate and to its own convolutions run alone.

Usage: ``python bench/bench_lista.py [--rounds 7] [--threads N]``; prints JSON lines.
"""

from __future__ import annotations

import argparse

import torch
from torch.nn import functional as F

import _common as C
from attri_ssc.models.config import preset
from attri_ssc.models.sparse_coder import Dictionary, ThresholdNet, lipschitz_constant, lista, lista_reference


def bench_lista(rounds: int, b: int = 4, c: int = 256, k: int = 512, side: int = 16, t: int = 16) -> None:
    torch.manual_seed(0)
    n = side * side
    m = b * n
    dictionary = Dictionary(c, k)
    e = torch.randn(b, c, n, requires_grad=True)
    raw = torch.randn(b, k, n, requires_grad=True)
    weight = torch.randn(b, k, n)

    def run(fn):
        def go() -> None:
            D = dictionary()
            alpha = 2.0 * F.softplus(raw)  # (B, K, N) thresholds >= 0
            z = fn(e, D, alpha, t, lipschitz_constant(D))
            (z * weight).sum().backward()
            e.grad = raw.grad = dictionary.weight.grad = None
        return go

    with torch.no_grad():
        D = dictionary()
        density = float((lista(e, D, 2.0 * F.softplus(raw), t, lipschitz_constant(D)) != 0).float().mean())
    gemms = C.lista_gemms(k, m)

    def gemm_skeleton() -> None:  # the iterations' GEMMs alone: (T-1) x (nn, nt, tn)
        for _ in range(t - 1):
            for fn, _ in gemms.values():
                fn()

    iter_flops = 3 * (t - 1) * 2 * k * k * m
    fused, reference = run(lista), run(lista_reference)
    counted = C.count_flops(fused)
    fns = {"gemm_nn": gemms["nn"][0], "gemm_nt": gemms["nt"][0], "gemm_tn": gemms["tn"][0],
           "gemm_skeleton": gemm_skeleton, "lista_fused": fused, "lista_reference": reference}
    times = C.interleaved(fns, rounds, warmup=1)
    gemm_rate = [iter_flops / s for s in times["gemm_skeleton"]]
    for name in ("nn", "nt", "tn"):
        C.emit({"bench": "gemm", "layout": name, "shape": [k, k, m],
                "gflops": round(gemms[name][1] / C.median(times[f"gemm_{name}"]) / 1e9, 2),
                "ms": round(1e3 * C.median(times[f"gemm_{name}"]), 3)})
    C.emit({"bench": "gemm", "layout": "lista_mix", "shape": [k, k, m], "what": "(T-1) x (nn, nt, tn)",
            "gflops": round(C.median(gemm_rate) / 1e9, 2), "ms": round(1e3 * C.median(times["gemm_skeleton"]), 2),
            "ms_range": [round(1e3 * x, 2) for x in C.spread(times["gemm_skeleton"])]})
    for name in ("lista_fused", "lista_reference"):
        ts = times[name]
        ratios = [g / s for g, s in zip(times["gemm_skeleton"], ts)]  # per-round rate ratio
        C.emit({"bench": "lista", "impl": name.split("_")[1], "B": b, "C": c, "K": k, "N": n, "T": t,
                "dtype": "float32", "pass": "forward+backward", "ms": round(1e3 * C.median(ts), 2),
                "ms_range": [round(1e3 * x, 2) for x in C.spread(ts)],
                "iteration_gflop": round(iter_flops / 1e9, 3), "counted_gflop": round(counted / 1e9, 3),
                "gflops_on_iterations": round(iter_flops / C.median(ts) / 1e9, 2),
                "ratio_to_gemm": round(C.median(ratios), 3), "target": 0.70,
                "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)], "code_density": round(density, 3),
                "rounds": rounds})
    f, r = C.median(times["lista_fused"]), C.median(times["lista_reference"])
    C.emit({"bench": "lista", "impl": "speedup", "what": "reference (plain autograd) ms / fused ms",
            "speedup": round(r / f, 2)})


def bench_threshold_net(rounds: int, b: int = 4, side: int = 16) -> None:
    torch.manual_seed(0)
    cfg = preset("paper", spatial_dims=2, input_size=8 * side)
    results = {}
    ref_fn, ref_flops = C.reference_conv(2)
    for fmt in ("contiguous", "channels_last"):
        net = ThresholdNet(cfg)
        e = torch.randn(b, cfg.latent_channels, side, side)
        if fmt == "channels_last":
            net = net.to(memory_format=torch.channels_last)
            e = e.contiguous(memory_format=torch.channels_last)
        e.requires_grad_(True)

        def step(net=net, e=e) -> None:
            net(e).sum().backward()
            e.grad = None
            for p in net.parameters():
                p.grad = None

        shapes = C.conv_shapes(net, lambda net=net, e=e: net(e))
        skeleton = C.conv_skeleton(shapes)
        flops = C.count_flops(step)
        times = C.interleaved({"ref": ref_fn, "net": step,
                               "skeleton": lambda s=skeleton: C.skeleton_seconds(s)}, rounds, warmup=1)
        ref_rate = [ref_flops / s for s in times["ref"]]
        net_rate = [flops / s for s in times["net"]]
        conv_share = C.skeleton_flops(skeleton) / flops
        results[fmt] = C.median(times["net"])
        C.emit({"bench": "threshold_net", "format": fmt, "B": b, "C": cfg.latent_channels, "K": cfg.n_atoms,
                "spatial": [side, side], "pass": "forward+backward", "ms": round(1e3 * C.median(times["net"]), 1),
                "ms_range": [round(1e3 * x, 1) for x in C.spread(times["net"])],
                "gflop": round(flops / 1e9, 2), "gflops": round(C.median(net_rate) / 1e9, 2),
                "conv_flop_share": round(conv_share, 4),
                "reference_conv_gflops": round(C.median(ref_rate) / 1e9, 2),
                "ratio_to_reference_conv": round(C.median([a / r for a, r in zip(net_rate, ref_rate)]), 3),
                # time its convolutions take run alone / its time: the share of the time at conv rate
                "ratio_to_own_convs_alone": round(C.median([s / n for s, n in zip(times["skeleton"], times["net"])]),
                                                  3),
                "rounds": rounds})
    C.emit({"bench": "threshold_net", "format": "speedup", "what": "contiguous ms / channels_last ms",
            "speedup": round(results["contiguous"] / results["channels_last"], 2)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-threshold-net", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_lista(args.rounds)
    if not args.skip_threshold_net:
        bench_threshold_net(max(3, args.rounds - 2))


if __name__ == "__main__":
    main()
