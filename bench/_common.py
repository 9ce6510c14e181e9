"""Helpers shared by the bench scripts: timing on a shared machine, JSON lines, the
machine's reference rates (GEMM at LISTA's sizes, convolution at the model's shapes).

Every measurement is repeated in interleaved rounds (reference, subject, reference,
subject, ...) so that a change of load on the shared machine hits both alike; ratios are
taken per round and their median reported. Every JSON line carries the load average.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))


def load_avg() -> list[float]:
    """1, 5 and 15 minute load averages (the machine is shared)."""
    return [round(x, 2) for x in os.getloadavg()]


def emit(record: dict[str, Any]) -> dict[str, Any]:
    """Print ``record`` as one JSON line with the load average, threads and CPU count."""
    full = {**record, "load": load_avg(), "threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    print(json.dumps(full), flush=True)
    return full


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    """Current resident set size (MiB) from /proc, or the peak where /proc is missing."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mib()


def sync(device: torch.device | str = "cpu") -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(fn: Callable[[], Any], device: torch.device | str = "cpu") -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call of ``fn`` (synchronised on CUDA).

    On a shared machine the wall time includes waiting for a core; with one thread the
    CPU time does not, so it is the steadier figure (with several threads it also counts
    threads spinning at barriers).
    """
    sync(device)
    c0, w0 = cpu_seconds(), time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - w0, cpu_seconds() - c0


def timed(fn: Callable[[], Any], device: torch.device | str = "cpu") -> float:
    """Wall seconds one call of ``fn`` takes (synchronised on CUDA)."""
    return measure(fn, device)[0]


class Timings:
    """Per-name lists of wall and CPU seconds, one entry per round."""

    def __init__(self, names) -> None:
        self.wall: dict[str, list[float]] = {n: [] for n in names}
        self.cpu: dict[str, list[float]] = {n: [] for n in names}

    def add(self, name: str, wall_cpu: tuple[float, float]) -> None:
        self.wall[name].append(float(wall_cpu[0]))
        self.cpu[name].append(float(wall_cpu[1]))

    def __getitem__(self, name: str) -> list[float]:
        return self.wall[name]

    def ratio(self, num: str, den: str, clock: str = "wall", scale: float = 1.0) -> list[float]:
        """Per-round ``scale * t[num] / t[den]`` on the chosen clock."""
        t = self.wall if clock == "wall" else self.cpu
        return [scale * a / b for a, b in zip(t[num], t[den])]


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1,
                device: torch.device | str = "cpu", self_timed: tuple[str, ...] = ()) -> Timings:
    """Run every function ``warmup`` times, then ``rounds`` rounds of one call each, in order.

    Returns :class:`Timings` (one wall and one CPU time per round and name), so ratios can
    be formed per round. Functions named in ``self_timed`` return their own
    ``(wall, cpu)`` seconds (e.g. :func:`skeleton_seconds`), recorded instead.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = Timings(fns)
    for _ in range(rounds):
        for name, fn in fns.items():
            times.add(name, fn() if name in self_timed else measure(fn, device))
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def summary(times: "Timings", name: str) -> dict[str, Any]:
    """ms (median wall), its [min, max], and cpu_ms (median process CPU time)."""
    return {"ms": round(1e3 * median(times.wall[name]), 2),
            "ms_range": [round(1e3 * x, 2) for x in spread(times.wall[name])],
            "cpu_ms": round(1e3 * median(times.cpu[name]), 2)}


def ratio_summary(times: "Timings", num: str, den: str, key: str, scale: float = 1.0) -> dict[str, Any]:
    """``key`` (median per-round wall ratio), its range, and ``key_cpu`` (same on CPU time)."""
    wall = times.ratio(num, den, "wall", scale)
    cpu = times.ratio(num, den, "cpu", scale)
    return {key: round(median(wall), 3), f"{key}_range": [round(min(wall), 3), round(max(wall), 3)],
            f"{key}_cpu": round(median(cpu), 3)}


def spread(xs: list[float]) -> list[float]:
    """[min, max] rounded, to show the noise."""
    return [round(min(xs), 4), round(max(xs), 4)]


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` by :class:`torch.utils.flop_counter.FlopCounterMode`."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------- GEMM reference


def lista_gemms(k: int, m: int, device: str = "cpu", dtype: torch.dtype = torch.float32
                ) -> dict[str, tuple[Callable[[], Any], int]]:
    """The three GEMMs of one LISTA iteration (forward and backward), at ``(K, M = B·N)``.

    ``nn``: ``S Z + b`` (K×K by K×M, the forward step); ``nt``: ``∂S += gv Zᵀ`` (K×M by M×K);
    ``tn``: ``g = Sᵀ gv`` (K×K transposed by K×M). Each maps to ``(fn, flops)``.
    """
    gen = torch.Generator(device="cpu").manual_seed(0)
    rnd = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype).to(device)  # noqa: E731
    S, Z, bias, G = rnd(k, k), rnd(k, m), rnd(k, m), rnd(k, m)
    out_km, out_kk = torch.empty(k, m, dtype=dtype, device=device), torch.zeros(k, k, dtype=dtype, device=device)
    flops = 2 * k * k * m
    return {
        "nn": (lambda: torch.addmm(bias, S, Z, out=out_km), flops),
        "nt": (lambda: out_kk.addmm_(G, Z.T), flops),
        "tn": (lambda: torch.mm(S.T, G, out=out_km), flops),
    }


# --------------------------------------------------------------------------- conv reference


def reference_conv(spatial_dims: int = 2, device: str = "cpu") -> tuple[Callable[[], Any], int]:
    """The machine's reference convolution: 3^d conv 512 -> 512 on 4×512×32^d
    (2D; 3D: 1×512×16³), forward plus both backward products. Returns ``(fn, flops)``."""
    shape = (4, 512, 32, 32) if spatial_dims == 2 else (1, 512, 16, 16, 16)
    x = torch.randn(*shape, device=device, requires_grad=True)
    w = torch.randn(512, 512, *([3] * spatial_dims), device=device, requires_grad=True)
    conv = F.conv2d if spatial_dims == 2 else F.conv3d

    def fn() -> None:
        y = conv(x, w, padding=1)
        y.backward(torch.ones_like(y))
        x.grad = w.grad = None

    return fn, count_flops(fn)


def conv_shapes(model: nn.Module, run: Callable[[], Any]) -> Counter:
    """Every convolution ``run`` calls in ``model``, as hashable shape keys with counts.

    A key is ``(kind, weight shape, stride, padding, input shape, input needs grad,
    memory format is channels-last)``.
    """
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    seen: Counter = Counter()

    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0]
        cl = x.dim() in (4, 5) and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
        seen[(type(module).__name__, tuple(module.weight.shape), tuple(module.stride), tuple(module.padding),
              tuple(x.shape), bool(x.requires_grad), cl, module.bias is not None)] += 1

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def conv_skeleton(shapes: Counter, device: str = "cpu", dtype: torch.dtype = torch.float32
                  ) -> list[tuple[Callable[[], Any], int, int]]:
    """For each distinct conv shape, ``(fn, flops, count)``: ``fn`` runs that convolution
    alone, forward and backward (input gradient only where the model needs it)."""
    out = []
    for key, count in shapes.items():
        kind, wshape, stride, padding, xshape, x_grad, cl, has_bias = key
        dims = len(wshape) - 2
        fmt = (torch.channels_last if dims == 2 else torch.channels_last_3d) if cl else torch.contiguous_format
        x = torch.randn(*xshape, device=device, dtype=dtype).contiguous(memory_format=fmt).requires_grad_(x_grad)
        w = torch.randn(*wshape, device=device, dtype=dtype)
        if cl:
            w = w.contiguous(memory_format=fmt)
        w.requires_grad_(True)
        bias = torch.zeros(wshape[1] if kind.startswith("ConvTranspose") else wshape[0], device=device,
                           dtype=dtype, requires_grad=True) if has_bias else None
        op = {("Conv", 1): F.conv1d, ("Conv", 2): F.conv2d, ("Conv", 3): F.conv3d,
              ("ConvTranspose", 1): F.conv_transpose1d, ("ConvTranspose", 2): F.conv_transpose2d,
              ("ConvTranspose", 3): F.conv_transpose3d}[(kind[:-2], dims)]

        def fn(op=op, x=x, w=w, bias=bias, stride=stride, padding=padding) -> None:
            y = op(x, w, bias, stride=stride, padding=padding)
            y.backward(torch.ones_like(y))
            x.grad = w.grad = None
            if bias is not None:
                bias.grad = None

        out.append((fn, count_flops(fn), count))
    return out


def skeleton_seconds(skeleton: list[tuple[Callable[[], Any], int, int]], device: str = "cpu"
                     ) -> tuple[float, float]:
    """(wall, CPU) seconds of the model's convolutions run alone: Σ count × (one call per shape)."""
    wall = cpu = 0.0
    for fn, _, count in skeleton:
        w, c = measure(fn, device)
        wall, cpu = wall + count * w, cpu + count * c
    return wall, cpu


def skeleton_flops(skeleton: list[tuple[Callable[[], Any], int, int]]) -> int:
    return sum(count * flops for _, flops, count in skeleton)
