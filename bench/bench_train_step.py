"""One full training step of Attri-SSC-VAE, against the machine's convolution rate.

The step is the trainer's (``attri_ssc.training.trainer.train``): forward, the family's
loss terms (Stage II: L_SSC + γ L_AR + L_GS, so every term and the mapper are live),
``zero_grad``, backward, gradient mask, gradient-norm check (one host sync), Adam
(fused, as the trainer makes it), ``post_step``. Measured per preset, in its own process
(so peak RSS is this preset's):

* ms/step (median of interleaved rounds), and its phases (forward, backward, optimiser);
* FLOPs of forward+backward by ``torch.utils.flop_counter.FlopCounterMode`` and the
  achieved GFLOP/s;
* two conv rates measured in the same rounds: ``reference``, a 3^d 512→512 conv
  (bench/_common.py), and ``model_shapes``, every convolution of the model run alone with
  its own shapes (the time the step would take if it were only its convolutions at the
  machine's speed for those shapes). ``ratio_to_conv`` is achieved / model-shape rate
  (target >= 0.60 for ``paper2d``);
* peak RSS (process high-water mark after the warm-up step, which creates Adam's state)
  and the RSS before it (model and batch built); on CUDA, peak allocated memory.

Presets: ``paper2d`` (4×1×128×128), ``small`` (4×1×64×64), ``paper3d`` (1×1×S³,
``--size 64`` or ``80``). ``--variant before`` runs the implementation before issue 9
(plain-autograd LISTA, per-tensor Adam loop) for comparison. ``--memory-model`` prints
the bytes autograd saves for backward per sample, computed on the meta device (no
arithmetic, any size).

Usage: ``python bench/bench_train_step.py --preset small [--rounds 5] [--threads 1]``
"""

from __future__ import annotations

import argparse
import math
import os
import time
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

import _common as C
from attri_ssc.config import ExperimentConfig, TrainConfig, paper_stages
from attri_ssc.data.config import DataConfig
from attri_ssc.models import sparse_coder
from attri_ssc.models.config import preset
from attri_ssc.training.families import FAMILIES, post_step

N_ATTRIBUTES = 4


def model_config(name: str, size: int | None):
    if name == "paper2d":
        return preset("paper", spatial_dims=2, input_size=size or 128), 4
    if name == "small":
        return preset("small", input_size=size or 64), 4
    if name == "paper3d":
        return preset("paper", spatial_dims=3, input_size=size or 64), 1
    if name == "paper3d-16x80x80":  # the paper-3d.yaml geometry: 16 slices of 80x80
        return preset("paper", spatial_dims=3, input_size=(16, 80, 80)), 4
    raise SystemExit(f"unknown preset {name!r}")


def experiment(mcfg, batch: int) -> ExperimentConfig:
    return ExperimentConfig(name="bench", model=mcfg, data=DataConfig(), train=TrainConfig(batch_size=batch),
                            stages=paper_stages())


def make_batch(mcfg, batch: int, device, channels_last: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(batch, mcfg.in_channels, *mcfg.input_shape, generator=gen).to(device)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last if image.dim() == 4 else torch.channels_last_3d)
    attrs = torch.rand(batch, N_ATTRIBUTES, generator=gen).to(device)
    return {"image": image, "attributes": attrs, "raw_attributes": attrs}


class Step:
    """The trainer's step on a fixed batch, with per-phase timings."""

    def __init__(self, mcfg, batch: int, device: torch.device, adam: str, precision: str, channels_last: bool):
        self.cfg = experiment(mcfg, batch)
        self.family = FAMILIES["attri_ssc"]
        self.stage = self.cfg.stages[1]  # Stage II: every loss term and the mapper are live
        torch.manual_seed(0)
        self.model = self.family.build(self.cfg, N_ATTRIBUTES).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last if mcfg.spatial_dims == 2
                                       else torch.channels_last_3d)
        self.model.train()
        self.groups = self.family.trainable_groups(self.model, self.stage, self.cfg)
        self.params = [p for g in self.groups for p in g["params"]]
        self.optimizer = torch.optim.Adam(self.groups, fused=True) if adam == "fused" else torch.optim.Adam(
            self.groups, foreach=False)
        self.batch = make_batch(mcfg, batch, device, channels_last)
        self.device = device
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                         else nullcontext())
        self.phases: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}

    def forward_backward(self) -> None:
        with self.autocast:
            out = self.model(self.batch["image"])
            terms = self.family.loss_terms(self.model, out, self.batch, self.stage, self.cfg)
        total = sum(terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self._last = (total, terms, out)

    def __call__(self) -> None:
        t0 = time.perf_counter()
        with self.autocast:  # as in trainer.train, phase by phase
            out = self.model(self.batch["image"])
            terms = self.family.loss_terms(self.model, out, self.batch, self.stage, self.cfg)
        total = sum(terms.values())
        C.sync(self.device)
        t1 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.family.after_backward(self.model)
        C.sync(self.device)
        t2 = time.perf_counter()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, math.inf)
        finite = torch.isfinite(total.detach()) & torch.isfinite(grad_norm)
        if bool(finite):  # the trainer's one host sync per step
            self.optimizer.step()
            post_step(self.model)
        C.sync(self.device)
        t3 = time.perf_counter()
        for name, dt in zip(self.phases, (t1 - t0, t2 - t1, t3 - t2)):
            self.phases[name].append(dt)


def bench_step(args) -> None:
    device = torch.device(args.device)
    mcfg, batch = model_config(args.preset, args.size)
    batch = args.batch or batch
    if args.variant == "before":
        sparse_coder.lista = sparse_coder.lista_reference  # AttentiveLISTA calls the module global
    adam = "loop" if args.variant == "before" else "fused"
    step = Step(mcfg, batch, device, adam, args.precision, args.channels_last)
    n_params = sum(p.numel() for p in step.params)
    rss_before = C.current_rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    counter = FlopCounterMode(display=False)
    t0 = time.perf_counter()
    with counter:  # the warm-up step (with Adam's first, state-creating update) doubles as the FLOP
        step()     # count: forward + backward (the optimiser's ops have no FLOP formula: 0)
    warmup_s = time.perf_counter() - t0
    for v in step.phases.values():
        v.clear()
    flops = int(counter.get_total_flops())
    conv_flops = sum(v for op, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(op))
    peak_rss = C.peak_rss_mib()
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None

    fns = {"step": step}
    skeleton = []
    if not args.no_conv_rate:
        shapes = C.conv_shapes(step.model, lambda: step.model(step.batch["image"]))
        skeleton = C.conv_skeleton(shapes, device=args.device,
                                   dtype=torch.bfloat16 if args.precision == "bf16" else torch.float32)
        ref_fn, ref_flops = C.reference_conv(mcfg.spatial_dims, device=args.device)
        fns["skeleton"] = lambda: C.skeleton_seconds(skeleton, device=args.device)
        fns["reference"] = ref_fn
    times = C.interleaved(fns, args.rounds, warmup=0, device=device, self_timed=("skeleton",))
    step_s = C.median(times.wall["step"])
    record = {"bench": "train_step", "preset": args.preset, "variant": args.variant, "adam": adam,
              "input": [batch, mcfg.in_channels, *mcfg.input_shape], "device": device.type,
              "precision": args.precision, "channels_last": args.channels_last, "params_m": round(n_params / 1e6, 2),
              "ms_per_step": round(1e3 * step_s, 1),
              "ms_range": [round(1e3 * x, 1) for x in C.spread(times.wall["step"])],
              "cpu_ms_per_step": round(1e3 * C.median(times.cpu["step"]), 1),
              "samples_per_s": round(batch / step_s, 3),
              "phases_ms": {k: round(1e3 * C.median(v), 1) for k, v in step.phases.items() if v},
              "warmup_counted_s": round(warmup_s, 1),
              "gflop_per_step": round(flops / 1e9, 2), "conv_flop_share": round(conv_flops / flops, 4),
              "gflops": round(flops / step_s / 1e9, 2),
              "peak_rss_mib": round(peak_rss, 1), "rss_before_warmup_mib": round(rss_before, 1),
              "rounds": args.rounds, "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0")}
    if peak_gpu is not None:
        record["peak_gpu_mib"] = round(peak_gpu, 1)
    if skeleton:
        sk_flops = C.skeleton_flops(skeleton)
        record.update({
            "conv_gflops_model_shapes": round(sk_flops / C.median(times.wall["skeleton"]) / 1e9, 2),
            "conv_gflops_reference": round(ref_flops / C.median(times.wall["reference"]) / 1e9, 2),
            # achieved FLOP/s / the conv rate at the model's own shapes, per round
            **C.ratio_summary(times, "skeleton", "step", "ratio_to_conv", scale=flops / sk_flops),
            **C.ratio_summary(times, "reference", "step", "ratio_to_reference_conv", scale=flops / ref_flops),
            "target": 0.60 if args.preset == "paper2d" else None,
        })
    C.emit(record)
    if args.compare_adam:
        compare_adam(step, args.rounds)


def compare_channels_last(args) -> None:
    """Contiguous vs channels-last models, steps interleaved in one process."""
    device = torch.device(args.device)
    mcfg, batch = model_config(args.preset, args.size)
    batch = args.batch or batch
    steps = {fmt: Step(mcfg, batch, device, "fused", args.precision, fmt == "channels_last")
             for fmt in ("contiguous", "channels_last")}
    times = C.interleaved(steps, args.rounds, warmup=1, device=device)
    C.emit({"bench": "channels_last", "preset": args.preset, "input": [batch, mcfg.in_channels, *mcfg.input_shape],
            "contiguous_ms": round(1e3 * C.median(times.wall["contiguous"]), 1),
            "channels_last_ms": round(1e3 * C.median(times.wall["channels_last"]), 1),
            **C.ratio_summary(times, "contiguous", "channels_last", "speedup"), "rounds": args.rounds})


def compare_adam_only(args) -> None:
    """Adam's three CPU implementations on the preset's parameters with random gradients
    (no forward or backward: seconds even for the paper presets)."""
    mcfg, batch = model_config(args.preset, args.size)
    step = Step(mcfg, args.batch or batch, torch.device(args.device), "fused", args.precision, False)
    gen = torch.Generator().manual_seed(0)
    for p in step.params:
        p.grad = 1e-3 * torch.randn(p.shape, generator=gen).to(p.device)
    compare_adam(step, args.rounds)


def compare_adam(step: Step, rounds: int) -> None:
    """optimizer.step() alone: per-tensor loop (torch's CPU default) vs foreach vs fused."""
    opts = {"loop": torch.optim.Adam(step.groups, foreach=False),
            "foreach": torch.optim.Adam(step.groups, foreach=True),
            "fused": torch.optim.Adam(step.groups, fused=True)}
    saved = [p.detach().clone() for p in step.params]
    for p in step.params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    times = C.interleaved({k: o.step for k, o in opts.items()}, rounds, warmup=1, device=step.device)
    with torch.no_grad():
        for p, s in zip(step.params, saved):
            p.copy_(s)
    C.emit({"bench": "adam_step", "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
            "params_m": round(sum(p.numel() for p in step.params) / 1e6, 2),
            **{f"{k}_ms": round(1e3 * C.median(v), 1) for k, v in times.wall.items()},
            **{f"{k}_cpu_ms": round(1e3 * C.median(v), 1) for k, v in times.cpu.items()}})


def memory_model(args) -> None:
    """Bytes autograd keeps for backward per sample (meta device: no arithmetic)."""
    mcfg, _ = model_config(args.preset, args.size)
    if args.variant == "before":
        sparse_coder.lista = sparse_coder.lista_reference
    with torch.device("meta"):
        model = FAMILIES["attri_ssc"].build(experiment(mcfg, 1), N_ATTRIBUTES)
    n_params = sum(p.numel() for p in model.parameters())
    out = {}
    for batch in (1, 2):
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            seen[storage._cdata] = storage.nbytes()
            return t

        x = torch.empty(batch, mcfg.in_channels, *mcfg.input_shape, device="meta")
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
        out[batch] = sum(seen.values())
    per_sample = out[2] - out[1]
    counter = FlopCounterMode(display=False)
    with counter:  # forward + backward of one sample, on the meta device
        recon = model(torch.empty(1, mcfg.in_channels, *mcfg.input_shape, device="meta")).ssc.recon
        recon.sum().backward()
    C.emit({"bench": "memory_model", "preset": args.preset, "variant": args.variant,
            "input_per_sample": [mcfg.in_channels, *mcfg.input_shape],
            "saved_for_backward_mib_per_sample": round(per_sample / 2**20, 1),
            "saved_for_backward_mib_batch1": round(out[1] / 2**20, 1),
            "params_m": round(n_params / 1e6, 2),
            "params_grads_adam_mib": round(4 * 4 * n_params / 2**20, 1),
            "gflop_per_sample_fwd_bwd": round(counter.get_total_flops() / 1e9, 1),
            "how": "meta device (shapes only): saved_tensors_hooks with storages counted once, fp32; "
                   "FlopCounterMode on forward+backward of one sample"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=["paper2d", "small", "paper3d", "paper3d-16x80x80"])
    parser.add_argument("--size", type=int, default=None, help="spatial side (default: 128 paper2d, 64 others)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--variant", default="current", choices=["current", "before"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--no-conv-rate", action="store_true", help="skip the conv-rate reference (saves time)")
    parser.add_argument("--compare-adam", action="store_true", help="after the step bench, time Adam variants")
    parser.add_argument("--compare-adam-only", action="store_true",
                        help="only time Adam variants, on random gradients")
    parser.add_argument("--memory-model", action="store_true")
    parser.add_argument("--compare-channels-last", action="store_true",
                        help="interleave steps of a contiguous and a channels-last model")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_model:
        memory_model(args)
    elif args.compare_adam_only:
        compare_adam_only(args)
    elif args.compare_channels_last:
        compare_channels_last(args)
    else:
        bench_step(args)


if __name__ == "__main__":
    main()
