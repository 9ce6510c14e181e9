"""``attri-ssc model-summary``: parameter count, latent shape and forward time of a preset.

Example: ``attri-ssc model-summary --preset paper --spatial-dims 3 --size 80``. The work
happens in :func:`attri_ssc.models.summary.summarize`.
"""

from __future__ import annotations

import argparse
import json

from attri_ssc.models.config import PRESETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "model-summary",
        help="print a model preset's parameter count, latent shape and forward time",
        description="Build an SSC-VAE preset and report its size and one timed forward pass.",
    )
    p.add_argument("--preset", default="small", choices=sorted(PRESETS), help="model preset (default: small)")
    p.add_argument("--spatial-dims", type=int, choices=(2, 3), default=None,
                   help="2 or 3 (default: the preset's)")
    p.add_argument("--size", type=int, default=None,
                   help="input side length, a multiple of 8 (default: the preset's)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the timed forward (default: 1)")
    p.add_argument("--device", default="cpu", help="torch device for the timed forward (default: cpu)")
    p.add_argument("--no-forward", action="store_true", help="skip the timed forward pass")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attri_ssc.models.summary import summarize

    s = summarize(args.preset, args.spatial_dims, args.size, args.batch, args.device, not args.no_forward)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"preset            {s['preset']} ({s['spatial_dims']}D)")
    print(f"input             {tuple(s['input_shape'])}")
    print(f"parameters        {s['parameters']:,}")
    for name, n in s["parameters_by_component"].items():
        print(f"  {name:<15} {n:,}")
    print(f"features e        {tuple(s['features_shape'])}")
    print(f"codes Z           {tuple(s['codes_shape'])}  (T = {s['n_iter']} LISTA iterations)")
    if "forward_seconds" in s:
        print(f"forward time      {s['forward_seconds']:.3f} s  (eval, no grad, {s['device']}, "
              f"{s['threads']} threads, first call)")
        print(f"code density      {s['code_density_at_init']:.3f}  (untrained)")
    return 0
