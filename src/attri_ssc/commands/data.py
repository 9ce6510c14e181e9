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
        out, args.n_cases, seed=args.seed, noise_std=args.noise_std, bias_strength=args.bias_strength,
        layout=args.layout,
    )
    n_norm = sum(t.label in ("N", "NOR") for t in truths)
    what = "frames" if args.layout == "acdc" else "cases"
    print(
        f"wrote {len(truths)} {what} ({n_norm} normal, {len(truths) - n_norm} pathological) in {args.layout} layout "
        f"to {out} in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    from attri_ssc.commands.data_options import data_config_from_args
    from attri_ssc.data.layouts import scan_folder

    cfg = data_config_from_args(args)
    scan = scan_folder(args.dir, cfg.layout, cfg.label_map, cfg.column_kinds, check_arrays=True)
    cases, problems = scan.cases, scan.problems
    print(f"{args.dir}: {scan.layout} layout; labels {scan.label_map.describe()}")
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

    ``mask`` holds canonical labels (:mod:`attri_ssc.data.labels`). Cavity red, myocardium
    green, infarct yellow, no-reflow cyan, RV blue. Returns ``out``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attri_ssc.data.attributes import myocardium
    from attri_ssc.io_utils import atomic_write

    n_z = image.shape[2]
    cols = min(n_z, 5)
    rows = int(np.ceil(n_z / cols))
    lo, hi = np.percentile(image, [1, 99])
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    outlines = ((1, "red"), (2, "lime"), (3, "yellow"), (4, "cyan"), (5, "dodgerblue"))
    aspect = spacing[1] / spacing[0] if len(spacing) >= 2 else 1.0
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n_z:
            continue
        ax.imshow(image[:, :, k], cmap="gray", vmin=lo, vmax=hi, aspect=aspect)
        m = mask[:, :, k]
        for label, colour in outlines:
            region = myocardium(m).astype(float) if label == 2 else (m == label).astype(float)
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
    from attri_ssc.commands.data_options import data_config_from_args
    from attri_ssc.data.layouts import scan_folder

    cfg = data_config_from_args(args)
    scan = scan_folder(args.dir, cfg.layout, cfg.label_map, cfg.column_kinds, check_arrays=False)
    wanted = args.case.removeprefix("Case_").removeprefix("Case ").upper()
    match = [c for c in scan.cases if c.case_id.upper() == wanted]
    if not match:
        errors = [p for p in scan.problems if p.severity == "error" and p.case_id.upper() == wanted]
        if errors:
            raise DataError("; ".join(str(p) for p in errors))
        ids = [c.case_id for c in scan.cases]
        known = ", ".join(ids[:20])
        raise DataError(f"{args.dir}: no case {args.case!r} (found: {known}{', ...' if len(ids) > 20 else ''})")
    case = match[0]
    image, mask = case.load_image(), case.load_mask()
    fevg = case.clinical_values().get("fevg")
    title = (
        f"Case {case.case_id} ({case.group}{', pathological' if case.pathological else ''}), "
        f"spacing {case.spacing[0]:.2f}x{case.spacing[1]:.2f}x{case.spacing[2]:.1f} mm"
        + (f", FEVG {fevg:g}%" if fevg is not None else "")
    )
    out = render_case_montage(image, mask, case.spacing, title, Path(args.out))
    print(f"wrote {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from attri_ssc.commands.data_options import add_data_config_arguments

    gen = subparsers.add_parser(
        "generate-phantoms",
        aliases=["phantoms"],
        help="write synthetic cases in EMIDEC, ACDC or manifest layout",
        description="Write synthetic delayed-enhancement short-axis cases in EMIDEC's layout, "
        "with ground truth (phantom_ground_truth.json/.csv) and noise-free images (phantom_clean/).",
    )
    gen.add_argument("out", nargs="?", help="output folder")
    gen.add_argument("--out", dest="out_opt", help="output folder (alternative to OUT)")
    gen.add_argument("--n-cases", "--cases", dest="n_cases", type=int, default=100, help="number of cases (100)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (0)")
    gen.add_argument("--noise-std", type=float, default=0.04, help="Rician noise std, infarct = 1 (0.04)")
    gen.add_argument("--bias-strength", type=float, default=0.1, help="log bias-field amplitude (0.1)")
    gen.add_argument("--layout", choices=("emidec", "acdc", "manifest"), default="emidec",
                     help="emidec (default); manifest: the same cases as NIfTI files + manifest.csv; acdc: cine-like "
                          "patients, an ED and an ES frame each with an Info.cfg (known ejection fraction)")
    gen.set_defaults(func=_generate)

    chk = subparsers.add_parser(
        "check-data",
        help="report every problem in a data folder (EMIDEC, ACDC or manifest layout)",
        description="Read every case (headers, voxels, labels, clinical files) and list every problem, "
        "each naming the case and file. Exit 3 when any case is unusable.",
    )
    chk.add_argument("dir", help="data folder (EMIDEC, ACDC or manifest layout) or manifest .csv")
    add_data_config_arguments(chk)
    chk.set_defaults(func=_check)

    show = subparsers.add_parser(
        "show-case",
        help="montage of a case's slices with the mask outlined",
        description="Save a montage of every slice of one case with the mask outlined.",
    )
    show.add_argument("dir", help="data folder")
    show.add_argument("case", help="case id, e.g. N006 or Case_N006")
    show.add_argument("--out", default="case.png", help="output image (case.png)")
    add_data_config_arguments(show)
    show.set_defaults(func=_show)
