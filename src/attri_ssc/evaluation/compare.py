"""``attri-ssc compare``: tables mirroring the paper's Tables 1, 2, 4 and 5 from results JSONs.

Runs are grouped by what distinguishes them (model family; full vs one-to-one mapping;
γ); a group with several seeds is reported as mean ± std (ddof 1), one seed as its value.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from attri_ssc.errors import DataError
from attri_ssc.io_utils import read_json, write_text

FAMILY_LABELS = {"vae": "VAE", "beta_vae": "β-VAE", "ar_vae": "AR-VAE", "attri_vae": "Attri-VAE",
                 "attri_ssc": "Attri-SSC-VAE"}
FAMILY_ORDER = ("vae", "beta_vae", "ar_vae", "attri_vae", "attri_ssc")


def load_results(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """results.json and the resolved config of each run."""
    import yaml

    rows = []
    for run in run_dirs:
        path = Path(run) / "results.json"
        if not path.exists():
            raise DataError(f"{path} not found: run `attri-ssc evaluate {run}` first")
        results = read_json(path)
        config = yaml.safe_load((Path(run) / "config.yaml").read_text())
        rows.append({"run": str(run), "results": results, "config": config})
    return rows


def _gamma(config: dict[str, Any]) -> float:
    return float(config["stages"][-1].get("gamma", 0.0))


def _get(results: dict[str, Any], path: str) -> Any:
    node: Any = results
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _mean_spearman(results: dict[str, Any]) -> float | None:
    values = [v.get("spearman") for v in results.get("attributes", {}).values()]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _cell(values: list[Any], scale: float = 1.0, digits: int = 3) -> str:
    if any(isinstance(v, str) for v in values):
        return "not computed"
    numbers = [float(v) * scale for v in values if v is not None]
    if not numbers:
        return "–"
    if len(numbers) == 1:
        return f"{numbers[0]:.{digits}f}"
    return f"{np.mean(numbers):.{digits}f} ± {np.std(numbers, ddof=1):.{digits}f}"


Column = tuple[str, Callable[[dict[str, Any]], Any], float, int]


def build_table(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any],
                label: Callable[[Any], str], columns: list[Column], order: Callable[[Any], Any] = lambda k: k
                ) -> tuple[list[str], list[list[str]]]:
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        k = key(row)
        if k is not None:
            groups[k].append(row)
    header = ["Model", "seeds"] + [c[0] for c in columns]
    body = []
    for k in sorted(groups, key=order):
        members = groups[k]
        body.append([label(k), str(len(members))] +
                    [_cell([get(m["results"]) for m in members], scale, digits) for _, get, scale, digits in columns])
    return header, body


def to_markdown(title: str, header: list[str], body: list[list[str]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def to_csv(header: list[str], body: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(body)
    return buf.getvalue()


def compare_runs(run_dirs: list[Path], out_dir: Path) -> dict[str, str]:
    """Write table1..table5 as Markdown and CSV into ``out_dir``; returns {name: markdown}."""
    rows = load_results(run_dirs)
    family = lambda r: r["results"]["family"]  # noqa: E731
    family_order = lambda k: FAMILY_ORDER.index(k) if k in FAMILY_ORDER else 99  # noqa: E731
    plain_ssc = lambda r: (r["results"]["family"] == "attri_ssc" and not r["config"]["train"].get("one_to_one")  # noqa: E731
                           and _gamma(r["config"]) == 5.0)
    tables: dict[str, tuple[str, list[str], list[list[str]]]] = {}
    main_rows = [r for r in rows if r["results"]["family"] != "attri_ssc" or plain_ssc(r)]
    tables["table1"] = ("Table 1: MMD ×10² between reconstructions and inputs (↓)", *build_table(
        main_rows, family, lambda k: FAMILY_LABELS.get(k, k),
        [("MMD×10² ↓", lambda r: _get(r, "reconstruction.mmd_x100"), 1.0, 3)], family_order))
    tables["table2"] = ("Table 2: reconstruction quality", *build_table(
        main_rows, family, lambda k: FAMILY_LABELS.get(k, k),
        [("MI×10² ↑", lambda r: _get(r, "reconstruction.mi_mean"), 100.0, 2),
         ("PSNR ↑", lambda r: _get(r, "reconstruction.psnr_mean"), 1.0, 2),
         ("PSNR vs clean ↑", lambda r: _get(r, "reconstruction_vs_clean.psnr_mean"), 1.0, 2),
         ("SSIM ↑", lambda r: _get(r, "reconstruction.ssim_mean"), 1.0, 4),
         ("FID ↓", lambda r: _get(r, "reconstruction.fid"), 1.0, 2),
         ("LPIPS ↓", lambda r: _get(r, "reconstruction.lpips"), 1.0, 4),
         ("mean Spearman ρ ↑", _mean_spearman, 1.0, 3)], family_order))
    ssc = [r for r in rows if r["results"]["family"] == "attri_ssc" and _gamma(r["config"]) == 5.0]
    tables["table4"] = ("Table 4: shared multi-atom mapping vs one-to-one", *build_table(
        ssc, lambda r: bool(r["config"]["train"].get("one_to_one")),
        lambda k: "w/o shared mapping (one-to-one)" if k else "Attri-SSC-VAE (shared mapping)",
        [("PSNR ↑", lambda r: _get(r, "reconstruction.psnr_mean"), 1.0, 2),
         ("SSIM ↑", lambda r: _get(r, "reconstruction.ssim_mean"), 1.0, 4),
         ("FID ↓", lambda r: _get(r, "reconstruction.fid"), 1.0, 2),
         ("LPIPS ↓", lambda r: _get(r, "reconstruction.lpips"), 1.0, 4),
         ("mean Spearman ρ ↑", _mean_spearman, 1.0, 3)]))
    sweep = [r for r in rows if r["results"]["family"] == "attri_ssc" and not r["config"]["train"].get("one_to_one")]
    if len({_gamma(r["config"]) for r in sweep}) < 2:
        sweep = []  # Table 5 compares several γ; one value is no ablation
    tables["table5"] = ("Table 5: γ ablation", *build_table(
        sweep, lambda r: _gamma(r["config"]), lambda k: f"γ = {k:g}",
        [("AR loss ↓", lambda r: _get(r, "ar_loss"), 1.0, 4),
         ("PSNR ↑", lambda r: _get(r, "reconstruction.psnr_mean"), 1.0, 2),
         ("SSIM ↑", lambda r: _get(r, "reconstruction.ssim_mean"), 1.0, 4),
         ("FID ↓", lambda r: _get(r, "reconstruction.fid"), 1.0, 2),
         ("LPIPS ↓", lambda r: _get(r, "reconstruction.lpips"), 1.0, 4),
         ("mean Spearman ρ ↑", _mean_spearman, 1.0, 3)]))
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown: dict[str, str] = {}
    for name, (title, header, body) in tables.items():
        if not body:
            continue
        markdown[name] = to_markdown(title, header, body)
        write_text(out_dir / f"{name}.md", markdown[name])
        write_text(out_dir / f"{name}.csv", to_csv(header, body))
    write_text(out_dir / "tables.md", "\n".join(markdown.values()))
    return markdown
