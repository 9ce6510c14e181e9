"""Which edit rule moves one attribute and nothing else? The ten-variant comparison.

``verify-edits`` (and ``make demo``) verify the default rule only
(:data:`DEFAULT_VARIANTS`); ``attri-ssc compare-edit-rules RUN --out DIR`` verifies every
variant of :data:`attri_ssc.interpret.verification.VARIANTS` on the same held-out images and
ranks them here: per variant, the worst monotonicity and the worst headline leakage over the
edited annulus attributes (cavity, myocardium, wall thickness), and whether each meets
:data:`EDIT_TARGETS`.
"""

from __future__ import annotations

from typing import Any

from attri_ssc.interpret.edit_references import DEFAULT_RULE
from attri_ssc.interpret.verification import EditVariant

#: What ``verify-edits``, ``interpret-all`` and the demo verify unless told otherwise.
DEFAULT_VARIANTS: tuple[EditVariant, ...] = (EditVariant(DEFAULT_RULE),)

#: Issue 21's targets for the edited annulus attributes: monotonicity >= 0.95, headline leakage <= 0.15.
EDIT_TARGETS: dict[str, float] = {"monotonicity": 0.95, "leakage": 0.15}

#: The attributes the targets are judged on (whichever form, area or volume, a run supervises).
ANNULUS_EDITS: tuple[str, ...] = ("lv_area", "lv_volume", "myo_area", "myo_volume", "wall_thickness")


def rank_edit_rules(report: dict[str, Any], targets: dict[str, float] = EDIT_TARGETS) -> list[dict[str, Any]]:
    """One row per verified variant of ``report`` (:func:`~attri_ssc.interpret.verification.verify_edits`'
    output), best first.

    Each row: ``rule``, ``attributes`` (the edited annulus attributes), ``monotonicity`` (the worst
    over them), ``leakage`` (the worst headline leakage), ``mean_monotonicity``, ``meets_targets``
    (every attribute meets both targets) and ``per_attribute`` ({name: (monotonicity, leakage)}).
    Sorted by meeting the targets, then by ``leakage − monotonicity`` (lower is better); a variant with
    a missing number sorts last.
    """
    rows = []
    for variant, per_attr in report.get("results", {}).items():
        edited = {a: r for a, r in per_attr.items() if a in ANNULUS_EDITS}
        mono = [r.get("monotonicity") for r in edited.values()]
        leak = [r.get("leakage") for r in edited.values()]
        complete = bool(edited) and None not in mono and None not in leak
        meets = complete and all(m >= targets["monotonicity"] for m in mono) and all(
            v <= targets["leakage"] for v in leak)
        rows.append({
            "rule": variant,
            "attributes": list(edited),
            "monotonicity": min(mono) if complete else None,
            "leakage": max(leak) if complete else None,
            "mean_monotonicity": sum(mono) / len(mono) if complete else None,
            "meets_targets": meets,
            "per_attribute": {a: (r.get("monotonicity"), r.get("leakage")) for a, r in edited.items()},
        })

    def key(row: dict[str, Any]) -> tuple:
        if row["monotonicity"] is None:
            return (2, 0.0)
        return (0 if row["meets_targets"] else 1, row["leakage"] - row["monotonicity"])

    return sorted(rows, key=key)


def edit_rules_markdown(rows: list[dict[str, Any]], report: dict[str, Any],
                        targets: dict[str, float] = EDIT_TARGETS) -> str:
    """A Markdown ranking of :func:`rank_edit_rules`' rows."""
    attributes = rows[0]["attributes"] if rows else []

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [
        "# Edit rules compared (independent judge)",
        "",
        f"{report.get('n_images')} held-out images, α grid of {len(report.get('alphas', []))} values, "
        f"top-{report.get('top_k')} atoms. Per rule: the worst monotonicity and the worst headline leakage over "
        f"{', '.join(attributes)}; targets monotonicity >= {targets['monotonicity']:g} with leakage <= "
        f"{targets['leakage']:g} on each. The default rule is `{DEFAULT_RULE}`. Details per attribute: "
        "edit_verification.md.",
        "",
        "| rank | rule | worst monotonicity | worst leakage | mean monotonicity | "
        + " | ".join(f"{a} (ρ / leak)" for a in attributes) + " | meets targets |",
        "|---|---|---|---|---|" + "---|" * len(attributes) + "---|",
    ]
    for i, row in enumerate(rows, 1):
        cells = [f"{fmt(m)} / {fmt(v)}" for m, v in (row["per_attribute"].get(a, (None, None)) for a in attributes)]
        lines.append(f"| {i} | {row['rule']} | {fmt(row['monotonicity'])} | {fmt(row['leakage'])} | "
                     f"{fmt(row['mean_monotonicity'])} | " + " | ".join(cells)
                     + f" | {'yes' if row['meets_targets'] else 'no'} |")
    return "\n".join(lines) + "\n"
