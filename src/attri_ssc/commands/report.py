"""``attri-ssc interpret-all`` (every figure of Section 4.2 for one run) and ``attri-ssc report``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from attri_ssc.commands.data_options import add_layout_argument

    p = sub.add_parser("interpret-all", help="interpolation, an edit strip per attribute, edit verification, "
                                             "correlations and samples for one run → DIR/interpret.json + PNGs")
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, required=True, help="figure folder")
    p.add_argument("--data", type=Path, default=None)
    add_layout_argument(p)
    p.add_argument("--weights", default=None, help="folder of attri-ssc weights fetch (sample FID)")
    p.add_argument("--n-images", type=int, default=24, help="held-out images for edit verification")
    p.set_defaults(func=_interpret_all)

    p = sub.add_parser("report", help="render a demo folder into report.md and report.html")
    p.add_argument("demo_dir", type=Path, help="folder written by scripts/demo.py (runs/, tables/, figures/)")
    p.add_argument("--out", type=Path, default=None, help="where report.{md,html} go (default: DEMO_DIR)")
    p.set_defaults(func=_report)


def _interpret_all(args: argparse.Namespace) -> int:
    from attri_ssc.cli import main as cli_main
    from attri_ssc.commands.interpret import DEFAULT_RULE, load_run_and_data
    from attri_ssc.interpret.editing import HOLD_FIXED, feedback_hold
    from attri_ssc.errors import AttriSSCError
    from attri_ssc.io_utils import read_json, write_json

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    from attri_ssc.commands.data_options import layout_argv

    run, bundle = load_run_and_data(args.run, args.data, layout=args.layout)
    data = (["--data", str(args.data)] if args.data else []) + layout_argv(args)
    test = bundle.test
    names = list(run.attribute_names)

    def call(*argv: str) -> None:
        code = cli_main(list(argv))
        if code:
            raise AttriSSCError(f"`attri-ssc {' '.join(argv)}` failed with exit code {code}")

    index: dict = {}
    # Interpolate between the test slices with the smallest and the largest LV cavity.
    lv = next((names.index(n) for n in ("lv_area", "lv_volume") if n in names), 0)
    order = test.raw_attributes[:, lv].argsort()
    spec = lambda i: f"{test.case_ids[i]}:{test.slice_indices[i]}" if test.slice_indices[i] >= 0 else test.case_ids[i]  # noqa: E731
    a, b = spec(int(order[0])), spec(int(order[-1]))
    call("interpolate", str(args.run), a, b, "--steps", "8", "--out", str(out / "interpolation.png"), *data)
    index["interpolation"] = {"png": "interpolation.png",
                              "caption": f"Decoded interpolation of codes Z between test slices {a} (smallest LV "
                                         f"cavity) and {b} (largest), Eq. 16; outer columns are the inputs."}
    # One edit strip per supervised attribute on a mid-sized test slice.
    middle = spec(int(order[len(order) // 2]))
    index["edits"] = {}
    for name in names:
        png = f"edit_{name}.png"
        call("edit", str(args.run), middle, "--attribute", name, "--out", str(out / png), *data)
        fixed = ([names[o] for o in feedback_hold(names, names.index(name))] if DEFAULT_RULE == "feedback"
                 else [f for f in HOLD_FIXED.get(name, ()) if f in names])
        rule = f"{DEFAULT_RULE} rule" + (f" holding {', '.join(fixed)} fixed" if fixed else "")
        index["edits"][name] = {"png": png, "caption": f"Editing {name} of {middle} (A.5 atoms, {rule}, "
                                                       f"α from −1 to 1, original in the centre) with the "
                                                       f"gradient saliency of the edited atoms below."}
    call("verify-edits", str(args.run), "--out", str(out / "verification"), "--n-images", str(args.n_images), *data)
    index["verification"] = _verification_entry(read_json(out / "verification" / "edit_verification.json"))
    call("correlations", str(args.run), "--out", str(out / "correlations"), *data)
    index["correlations"] = _correlation_entry(read_json(out / "correlations" / "correlations.json"))
    sample_args = ["--weights", args.weights] if args.weights else []
    call("sample", str(args.run), "-n", "16", "--out", str(out / "samples.png"), *sample_args, *data)
    metrics = read_json(out / "samples.json")
    index["samples"] = {"png": "samples.png", "caption": "Images decoded from codes drawn from the sparse prior.",
                        "metrics": {k: metrics[k] for k in ("mmd_x100", "reference_recon_mmd_x100", "fid")
                                    if k in metrics}}
    write_json(out / "interpret.json", index)
    print(f"interpretation figures in {out}")
    return 0


def _verification_entry(report: dict) -> dict:
    """Table rows (rule variant × attribute) and a one-line summary from edit_verification.json."""
    header = ["rule", "attribute", "monotonicity ρ", "leakage", "leakage (all)", "atoms"]
    rows, summary = [], []
    variants = report.get("results", {})
    for variant, per_attr in variants.items():
        for attr, res in per_attr.items():
            rows.append([variant, attr, res.get("monotonicity"), res.get("leakage"), res.get("leakage_all"),
                         ", ".join(map(str, res.get("atoms", [])))])
    default = next(iter(variants), None)
    for attr in ("lv_area", "lv_volume", "myo_area", "myo_volume"):
        res = variants.get(default, {}).get(attr) if default else None
        if res and res.get("monotonicity") is not None:
            leak = res.get("leakage")
            summary.append(f"{attr} ρ {res['monotonicity']:.2f}, leakage {leak:.2f}" if leak is not None
                           else f"{attr} ρ {res['monotonicity']:.2f}")
    return {"table": [header, rows], "summary": f"({default}) " + "; ".join(summary) if summary else ""}


def _correlation_entry(result: dict) -> dict:
    header = ["attribute pair", "r (ground truth)", "p", "r (â)", "p (â)", "shared atoms"]
    rows = [[f"{p['a']} – {p['b']}", p.get("r_sample"), p.get("p_sample"), p.get("r_recon"), p.get("p_recon"),
             ", ".join(map(str, p.get("shared_atoms", []))) or "none"] for p in result.get("pairs", [])]
    return {"table": [header, rows], "png": "correlations/w_heatmap.png",
            "caption": "Mapper W (attributes × atoms, support only): which atoms carry which attribute."}


def _report(args: argparse.Namespace) -> int:
    from attri_ssc.reports.report import build_report

    md, html_path, summary = build_report(args.demo_dir, args.out)
    print("\n".join(summary))
    print(f"report: {html_path} (and {md})")
    return 0
