"""Data subcommands: ``generate-phantoms`` (alias ``phantoms``), ``check-data``, ``show-case``.

Exit codes: 0 ok; 2 bad arguments; 3 data problems (``check-data`` when any case is
unusable; ``show-case`` when the case cannot be read).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from attri_ssc.errors import ConfigError, DataError


def _generate(args: argparse.Namespace) -> int:
    from attri_ssc.data.phantoms import generate_phantoms

    out = args.out_opt or args.out
    if not out:
        raise ConfigError("generate-phantoms: give the output folder (OUT or --out)")
    if args.n_cases < 1:
        raise ConfigError(f"--n-cases must be >= 1, got {args.n_cases}")
    if args.noise_std < 0:
        raise ConfigError(f"--noise-std must be >= 0, got {args.noise_std}")
    start = time.perf_counter()
    truths = generate_phantoms(
        out, args.n_cases, seed=args.seed, noise_std=args.noise_std, bias_strength=args.bias_strength
    )
    n_norm = sum(t.label == "N" for t in truths)
    print(
        f"wrote {len(truths)} cases ({n_norm} N, {len(truths) - n_norm} P) to {out} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    from attri_ssc.data.emidec import scan_dataset

    cases, problems = scan_dataset(args.dir, check_arrays=True)
    for p in problems:
        print(p)
    errors = [p for p in problems if p.severity == "error"]
    bad_ids = sorted({p.case_id or "(folder)" for p in errors})
    n_warn = len(problems) - len(errors)
    print(f"{len(cases)} usable case(s); {len(errors)} error(s) in {len(bad_ids)} case(s); {n_warn} warning(s)")
    if errors:
        raise DataError(f"{args.dir}: unusable: {', '.join(bad_ids)}")
    return 0


def render_case_montage(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...], title: str, out: Path) -> Path:
    """Save a montage of every slice of ``image`` (X, Y, Z) with ``mask`` outlined.

    Cavity red, myocardium green, infarct yellow, no-reflow cyan. Returns ``out``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attri_ssc.io_utils import atomic_write

    n_z = image.shape[2]
    cols = min(n_z, 5)
    rows = int(np.ceil(n_z / cols))
    lo, hi = np.percentile(image, [1, 99])
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    outlines = ((1, "red"), (2, "lime"), (3, "yellow"), (4, "cyan"))
    aspect = spacing[1] / spacing[0] if len(spacing) >= 2 else 1.0
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n_z:
            continue
        ax.imshow(image[:, :, k], cmap="gray", vmin=lo, vmax=hi, aspect=aspect)
        m = mask[:, :, k]
        for label, colour in outlines:
            region = (m >= 2).astype(float) if label == 2 else (m == label).astype(float)
            if region.any():
                ax.contour(region, levels=[0.5], colors=colour, linewidths=0.8)
        ax.set_title(f"slice {k}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()

    def _save(tmp: Path) -> None:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=100)

    atomic_write(out, _save)
    plt.close(fig)
    return out


def _show(args: argparse.Namespace) -> int:
    from attri_ssc.data.emidec import discover, inspect_case

    wanted = args.case.removeprefix("Case_").removeprefix("Case ").upper()
    files, _ = discover(args.dir)
    match = [f for f in files if f.case_id == wanted]
    if not match:
        known = ", ".join(f.case_id for f in files[:20])
        raise DataError(f"{args.dir}: no case {args.case!r} (found: {known}{', ...' if len(files) > 20 else ''})")
    case, problems = inspect_case(match[0], check_arrays=False)
    if case is None:
        raise DataError("; ".join(str(p) for p in problems if p.severity == "error"))
    image, mask = case.load_image(), case.load_mask()
    title = (
        f"Case {case.case_id} ({'pathological' if case.pathological else 'normal'}), "
        f"spacing {case.spacing[0]:.2f}x{case.spacing[1]:.2f}x{case.spacing[2]:.1f} mm, FEVG {case.clinical.fevg:g}%"
    )
    out = render_case_montage(image, mask, case.spacing, title, Path(args.out))
    print(f"wrote {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser(
        "generate-phantoms",
        aliases=["phantoms"],
        help="write synthetic DE-MRI cases in EMIDEC layout",
        description="Write synthetic delayed-enhancement short-axis cases in EMIDEC's layout, "
        "with ground truth (phantom_ground_truth.json/.csv) and noise-free images (phantom_clean/).",
    )
    gen.add_argument("out", nargs="?", help="output folder")
    gen.add_argument("--out", dest="out_opt", help="output folder (alternative to OUT)")
    gen.add_argument("--n-cases", "--cases", dest="n_cases", type=int, default=100, help="number of cases (100)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (0)")
    gen.add_argument("--noise-std", type=float, default=0.04, help="Rician noise std, infarct = 1 (0.04)")
    gen.add_argument("--bias-strength", type=float, default=0.1, help="log bias-field amplitude (0.1)")
    gen.set_defaults(func=_generate)

    chk = subparsers.add_parser(
        "check-data",
        help="report every problem in a folder in EMIDEC layout",
        description="Read every case (headers, voxels, labels, clinical files) and list every problem, "
        "each naming the case and file: files that do not parse, and content that makes no sense (blank "
        "images, masks without a needed structure or on another grid, implausible spacing, files named for "
        "another case, contradictory clinical fields; docs/data-format.md). Exit 3 when any case is unusable.",
    )
    chk.add_argument("dir", help="data folder")
    chk.set_defaults(func=_check)

    show = subparsers.add_parser(
        "show-case",
        help="montage of a case's slices with the mask outlined",
        description="Save a montage of every slice of one case with the mask outlined.",
    )
    show.add_argument("dir", help="data folder")
    show.add_argument("case", help="case id, e.g. N006 or Case_N006")
    show.add_argument("--out", default="case.png", help="output image (case.png)")
    show.set_defaults(func=_show)
