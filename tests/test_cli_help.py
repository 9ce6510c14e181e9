"""Every subcommand's ``--help`` shows an example invocation, and the examples name real commands."""

from __future__ import annotations

import pytest

from attri_ssc.cli import build_parser, main
from attri_ssc.commands.examples import EXAMPLES, subcommands

PARSER = build_parser()
SUBCOMMANDS = subcommands(PARSER)


def test_the_walk_finds_nested_subcommands():
    assert {"train", "evaluate", "weights", "weights fetch", "weights status", "interpret-all"} <= set(SUBCOMMANDS)
    assert len(SUBCOMMANDS) >= 18


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_help_has_an_example(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*name.split(), "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Example" in text, f"`attri-ssc {name} --help` has no example; add one to commands/examples.py"
    first = EXAMPLES[name].splitlines()[0]
    assert first in text  # printed verbatim (RawDescriptionHelpFormatter keeps the line)


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_example_parses(name):
    """The example lines are valid invocations of their own subcommand."""
    for line in EXAMPLES[name].splitlines():
        argv = line.split()[1:]
        assert argv[: len(name.split())] == name.split()
        PARSER.parse_args(argv)
