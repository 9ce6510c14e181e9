"""Command-line options every data-reading command shares: ``--layout`` (and, for the
commands that read a folder without a run, ``--config``/``--set`` for the label map and
declared manifest columns)."""

from __future__ import annotations

import argparse

LAYOUT_HELP = ("data layout: emidec (Case_<id>/Images, Contours, 'Case <id>.txt'), acdc (patientNNN/Info.cfg, "
               "ED/ES frames and _gt masks) or manifest (manifest.csv); default: detected from the folder "
               "(a trained run: the layout it recorded)")


def add_layout_argument(p: argparse.ArgumentParser) -> None:
    """``--layout emidec|acdc|manifest`` (default: detected, or the run's recorded layout)."""
    from attri_ssc.data.config import LAYOUTS

    p.add_argument("--layout", choices=LAYOUTS, default=None, help=LAYOUT_HELP)


def add_data_config_arguments(p: argparse.ArgumentParser) -> None:
    """``--layout`` plus ``--config`` and ``--set data.KEY=VALUE`` (label map, declared columns)."""
    add_layout_argument(p)
    p.add_argument("--config", default=None,
                   help="preset or YAML whose data section (label_map, columns) applies (default: EMIDEC's labels, "
                        "or ACDC's for an ACDC folder)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.KEY=VALUE",
                   help="override a data setting, e.g. --set data.label_map.lv_cavity=3 (repeatable)")


def data_config_from_args(args: argparse.Namespace):
    """The :class:`DataConfig` that ``--config``/``--set``/``--layout`` describe."""
    from attri_ssc.config import apply_overrides, load_config
    from attri_ssc.data.config import DataConfig
    from attri_ssc.errors import ConfigError

    overrides = list(getattr(args, "overrides", []) or [])
    if getattr(args, "config", None):
        cfg = load_config(args.config, overrides).data
    else:
        bad = [o for o in overrides if not o.startswith("data.")]
        if bad:
            raise ConfigError(f"--set here takes data settings only (data.KEY=VALUE), got {bad[0]!r}")
        cfg = DataConfig.from_dict(apply_overrides({"data": DataConfig().to_dict()}, overrides)["data"])
    if getattr(args, "layout", None):
        import dataclasses

        cfg = dataclasses.replace(cfg, layout=args.layout)
    return cfg


def layout_argv(args: argparse.Namespace) -> list[str]:
    """``['--layout', X]`` when ``--layout`` was given (to pass on to sub-commands), else []."""
    return ["--layout", args.layout] if getattr(args, "layout", None) else []


__all__ = ["add_data_config_arguments", "add_layout_argument", "data_config_from_args", "layout_argv"]
