"""LISTA and the attentive threshold network against the machine's own GEMM and conv rates.

Measures, in one process and interleaved rounds:

* ``gemm``: the machine's fp32 GEMM rate at LISTA's sizes (K×K by K×M with K = 512 and
  M = B·N = 1024, in the three layouts one iteration uses forward and backward);
* ``lista``: forward+backward of :func:`attri_ssc.models.sparse_coder.lista` at B = 4,
  C' = 256, K = 512, 16×16 locations, T = 16, fp32, and of :func:`lista_reference`
  (plain autograd, the implementation before the fused one); ms, GFLOP/s on the
  iterations' FLOPs (3·(T−1)·2K²M: one GEMM forward and two backward per iteration),
  ratio to the GEMM rate (target >= 0.80). The whole measurement is repeated ``--repeats``
  times (default 5) and the last record gives every repeat's ratio and their median, the
  figure to quote (single runs on a shared machine spread by ±0.1);
* ``threshold_net``: the attentive threshold network alone (conv C'→K, two residual
  blocks, CBAM) at the same shapes, forward+backward: ms, GFLOP/s on FlopCounterMode's
  count, ratio to the reference conv rate and to its own convolutions run alone.

Usage: ``python bench/bench_lista.py [--rounds 7] [--repeats 5] [--threads N]``; prints JSON lines.
"""

from __future__ import annotations

import argparse

import torch
from torch.nn import functional as F

import _common as C
from attri_ssc.models.config import preset
from attri_ssc.models.sparse_coder import Dictionary, ThresholdNet, lipschitz_constant, lista, lista_reference


TARGET = 0.80


def bench_lista(rounds: int, b: int = 4, c: int = 256, k: int = 512, side: int = 16, t: int = 16,
                repeat: int = 0) -> float:
    """One interleaved measurement; emits its records and returns the fused LISTA's median
    per-round ratio to the GEMM rate."""
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
    for name in ("nn", "nt", "tn"):
        key = f"gemm_{name}"
        C.emit({"bench": "gemm", "layout": name, "shape": [k, k, m], **C.summary(times, key),
                "gflops": round(gemms[name][1] / C.median(times.wall[key]) / 1e9, 2),
                "gflops_cpu": round(gemms[name][1] / C.median(times.cpu[key]) / 1e9, 2)})
    C.emit({"bench": "gemm", "layout": "lista_mix", "shape": [k, k, m], "what": "(T-1) x (nn, nt, tn)",
            **C.summary(times, "gemm_skeleton"),
            "gflops": round(iter_flops / C.median(times.wall["gemm_skeleton"]) / 1e9, 2),
            "gflops_cpu": round(iter_flops / C.median(times.cpu["gemm_skeleton"]) / 1e9, 2)})
    ratio = 0.0
    for name in ("lista_fused", "lista_reference"):
        record = C.emit({"bench": "lista", "impl": name.split("_")[1], "repeat": repeat, "B": b, "C": c, "K": k,
                         "N": n, "T": t,
                "dtype": "float32", "pass": "forward+backward", **C.summary(times, name),
                "iteration_gflop": round(iter_flops / 1e9, 3), "counted_gflop": round(counted / 1e9, 3),
                "gflops_on_iterations": round(iter_flops / C.median(times.wall[name]) / 1e9, 2),
                # per round: (time of the iterations' GEMMs alone) / (time of LISTA) = rate ratio
                **C.ratio_summary(times, "gemm_skeleton", name, "ratio_to_gemm"), "target": TARGET,
                "code_density": round(density, 3), "rounds": rounds})
        if name == "lista_fused":
            ratio = record["ratio_to_gemm"]
    C.emit({"bench": "lista", "impl": "speedup", "repeat": repeat, "what": "reference (plain autograd) / fused",
            **C.ratio_summary(times, "lista_reference", "lista_fused", "speedup")})
    return ratio


def bench_threshold_net(rounds: int, b: int = 4, side: int = 16) -> None:
    torch.manual_seed(0)
    cfg = preset("paper", spatial_dims=2, input_size=8 * side)
    results: dict[str, C.Timings] = {}
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
                               "skeleton": lambda s=skeleton: C.skeleton_seconds(s)}, rounds, warmup=1,
                              self_timed=("skeleton",))
        results[fmt] = times
        C.emit({"bench": "threshold_net", "format": fmt, "B": b, "C": cfg.latent_channels, "K": cfg.n_atoms,
                "spatial": [side, side], "pass": "forward+backward", **C.summary(times, "net"),
                "gflop": round(flops / 1e9, 2), "gflops": round(flops / C.median(times.wall["net"]) / 1e9, 2),
                "conv_flop_share": round(C.skeleton_flops(skeleton) / flops, 4),
                "reference_conv_gflops": round(ref_flops / C.median(times.wall["ref"]) / 1e9, 2),
                # achieved rate / reference conv rate, per round
                **C.ratio_summary(times, "ref", "net", "ratio_to_reference_conv", scale=flops / ref_flops),
                # its convolutions run alone / the net: the share of its time spent at conv speed
                **C.ratio_summary(times, "skeleton", "net", "ratio_to_own_convs_alone"),
                "rounds": rounds})
    cont, cl = results["contiguous"], results["channels_last"]
    C.emit({"bench": "threshold_net", "format": "speedup", "what": "contiguous ms / channels_last ms",
            "speedup": round(C.median(cont.wall["net"]) / C.median(cl.wall["net"]), 2),
            "speedup_cpu": round(C.median(cont.cpu["net"]) / C.median(cl.cpu["net"]), 2)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5, help="independent LISTA measurements; the median is "
                                                                  "reported (default 5)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-threshold-net", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ratios = [bench_lista(args.rounds, repeat=i) for i in range(args.repeats)]
    C.emit({"bench": "lista", "impl": "fused", "what": "ratio to the GEMM rate, median of the repeats",
            "ratio_to_gemm_runs": ratios, "ratio_to_gemm_median": round(C.median(ratios), 3), "target": TARGET,
            "meets_target": C.median(ratios) >= TARGET, "load_avg": C.load_avg()})
    if not args.skip_threshold_net:
        bench_threshold_net(max(3, args.rounds - 2))


if __name__ == "__main__":
    main()
