"""An example invocation for every subcommand, shown at the end of its ``--help``.

:func:`add_examples` is applied by :func:`attri_ssc.cli.build_parser` to every parser it
registered; ``tests/test_cli_help.py`` fails for a subcommand without one, so a new command
adds its line here.
"""

from __future__ import annotations

import argparse

#: Subcommand (nested ones as ``"weights fetch"``) → example lines.
EXAMPLES: dict[str, str] = {
    "model-summary": "attri-ssc model-summary --preset small --spatial-dims 3 --size 64",
    "generate-phantoms": "attri-ssc generate-phantoms data/phantoms --n-cases 40 --seed 0",
    "check-data": "attri-ssc check-data data/emidec",
    "show-case": "attri-ssc show-case data/phantoms P001 --out P001.png",
    "train": "attri-ssc train --data data/phantoms --config demo-2d --out runs/demo/attri_ssc\n"
             "attri-ssc train --data data/phantoms --config demo-2d --out runs/vae --set train.family=vae",
    "evaluate": "attri-ssc evaluate runs/demo/attri_ssc --weights ~/.cache/attri-ssc/weights",
    "compare": "attri-ssc compare runs/demo/attri_ssc runs/demo/vae --out runs/demo/tables",
    "sweep": "attri-ssc sweep --data data/phantoms --out runs/sweep --gammas 0 1 10 --seeds 0 1",
    "weights": "attri-ssc weights fetch\nattri-ssc weights status",
    "weights fetch": "attri-ssc weights fetch --dir ~/.cache/attri-ssc/weights",
    "weights status": "attri-ssc weights status --dir ~/.cache/attri-ssc/weights",
    "interpolate": "attri-ssc interpolate runs/demo/attri_ssc P003 P017:4 --steps 8 --out interpolation.png",
    "edit": "attri-ssc edit runs/demo/attri_ssc P003 --attribute lv_area --out edit_lv_area.png",
    "correlations": "attri-ssc correlations runs/demo/attri_ssc --out figures/correlations",
    "verify-edits": "attri-ssc verify-edits runs/demo/attri_ssc --n-images 24 --out figures/verification",
    "compare-edit-rules": "attri-ssc compare-edit-rules runs/demo/runs/attri_ssc --out runs/demo/edit_rules",
    "sample": "attri-ssc sample runs/demo/attri_ssc -n 16 --out figures/samples.png",
    "interpret-all": "attri-ssc interpret-all runs/demo/attri_ssc --out runs/demo/figures",
    "report": "attri-ssc report runs/demo",
    "diagnose": "attri-ssc diagnose usage runs/demo/attri_ssc",
    "diagnose usage": "attri-ssc diagnose usage runs/demo/attri_ssc --checkpoint after_stage1 --checkpoint final "
                      "--json usage.json",
    "serve": "attri-ssc serve runs/demo/attri_ssc --port 8000",
}


def subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every subcommand parser under ``parser``: ``{"train": p, "weights fetch": p, ...}``
    (aliases left out)."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:
                    continue
                seen.add(id(sub))
                full = f"{prefix}{name}"
                found[full] = sub
                found.update(subcommands(sub, full + " "))
    return found


def add_examples(parser: argparse.ArgumentParser) -> None:
    """Append ``Example:`` and the lines of :data:`EXAMPLES` to each subcommand's help."""
    for name, sub in subcommands(parser).items():
        if name in EXAMPLES and "Example" not in (sub.epilog or ""):
            lines = "\n".join(f"  {line}" for line in EXAMPLES[name].splitlines())
            label = "Examples" if "\n" in EXAMPLES[name] else "Example"
            sub.epilog = ((sub.epilog + "\n\n") if sub.epilog else "") + f"{label}:\n{lines}"
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
