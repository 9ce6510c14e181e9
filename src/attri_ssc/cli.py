"""The ``attri-ssc`` command line: parses arguments and calls library functions.

Each subcommand lives in ``attri_ssc/commands/<module>.py`` and defines
``register(subparsers)`` (adds its parser and sets ``func``); every subcommand's
``--help`` ends with an example from :mod:`attri_ssc.commands.examples`. Errors derived from
:class:`attri_ssc.errors.AttriSSCError` become one-line messages and the documented
exit code; argparse usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# OpenMP's default spin-waiting makes 2-thread steps 2-7x slower whenever another process
# shares the CPU (README "Performance"). libgomp reads this when torch is first imported,
# which happens below when the command modules load; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from attri_ssc import __version__
from attri_ssc.commands.examples import add_examples
from attri_ssc.errors import AttriSSCError

# Modules under attri_ssc.commands, each registering one or more subcommands.
COMMAND_MODULES: tuple[str, ...] = (
    "model_summary",
    "data",
    "train",
    "evaluate",
    "weights",
    "edit",
    "interpret",
    "report",
    "diagnose",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attri-ssc",
        description="Attri-SSC-VAE: interpretable sparse-coding VAEs for cardiac MRI.",
    )
    parser.add_argument("--version", action="version", version=f"attri-ssc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"attri_ssc.commands.{name}")
        except ModuleNotFoundError as exc:  # a command family not built yet
            if exc.name == f"attri_ssc.commands.{name}":
                continue
            raise
        module.register(sub)
    add_examples(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except AttriSSCError as exc:
        print(f"attri-ssc {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"attri-ssc {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
