"""Every ```python block of README.md and docs/**/*.md runs against a smoke run.

The convention (docs/README.md, "Code blocks are tested") in short:

* The blocks of one Markdown file run in order in one namespace, like a notebook's cells,
  in a fresh temporary working directory.
* The literal paths of `make demo`'s run and data, ``runs/demo/runs/attri_ssc`` and
  ``runs/demo/phantoms``, are replaced by the session's smoke run (``smoke_run`` in
  conftest.py: the demo's attributes on 32×32 slices) and its phantom folder
  (``phantom_dir``), so a block reads exactly as a user would type it after ``make demo``.
* A block that cannot run here starts with ``# doc-test: skip (REASON)``. It must still
  compile; it is reported as a pytest skip with its reason, so the summary counts them.

A block without the marker that raises fails the test, naming the file and the block's line.

The shell blocks are checked too, without running them: every ``attri-ssc ...`` (or
``-m attri_ssc ...``) line must name a real subcommand and only options it takes, and a
``train`` line's preset and ``--set`` overrides must make a valid config.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_RUN = "runs/demo/runs/attri_ssc"
DEMO_DATA = "runs/demo/phantoms"
README_MAX_BYTES = 15 * 1024

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_MARKER = re.compile(r"^#\s*doc-test:(.*)$")
_SKIP = re.compile(r"^\s*skip\s*\((?P<reason>[^)]*\S[^)]*)\)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced python block: its file, the line of its first code line, its source."""

    path: Path
    line: int
    source: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        """The reason of a ``# doc-test: skip (REASON)`` first line, else None.

        Raises ValueError for a ``# doc-test:`` line that is not a well-formed skip marker
        (a typo must not silently run or silently skip a block).
        """
        first = self.source.lstrip("\n").splitlines()[0] if self.source.strip() else ""
        marker = _MARKER.match(first.strip())
        if marker is None:
            for other in self.source.splitlines()[1:]:
                if _MARKER.match(other.strip()):
                    raise ValueError(f"{self.where}: '# doc-test:' must be the block's first line")
            return None
        skip = _SKIP.match(marker.group(1))
        if skip is None:
            raise ValueError(f"{self.where}: malformed marker {first.strip()!r}; "
                             "expected '# doc-test: skip (REASON)'")
        return skip.group("reason").strip()


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/, sorted."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of one Markdown file, in order."""
    text = path.read_text(encoding="utf-8")
    return [Block(path, text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _FENCE.finditer(text)]


ALL_BLOCKS = [block for path in doc_files() for block in python_blocks(path)]
FILES_WITH_BLOCKS = sorted({block.path for block in ALL_BLOCKS})


def _skip_reason_or_error(block: Block) -> str | None:
    try:
        return block.skip_reason
    except ValueError as exc:
        return f"ERROR: {exc}"


SKIPPED = [b for b in ALL_BLOCKS if _skip_reason_or_error(b) is not None]


def _rewrite(source: str, run_dir: Path, data_dir: Path) -> str:
    """Point the demo's literal paths at the smoke run and its data."""
    return source.replace(DEMO_RUN, run_dir.as_posix()).replace(DEMO_DATA, Path(data_dir).as_posix())


def test_readme_fits_its_budget() -> None:
    size = (REPO / "README.md").stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes, over the {README_MAX_BYTES}-byte budget"


def test_readme_has_a_runnable_python_block() -> None:
    readme = [b for b in ALL_BLOCKS if b.path.name == "README.md" and b.path.parent == REPO]
    runnable = [b for b in readme if _skip_reason_or_error(b) is None]
    assert runnable, "README.md must carry at least one ```python block that the tests run"


def test_markers_are_well_formed() -> None:
    errors = [reason for b in ALL_BLOCKS if (reason := _skip_reason_or_error(b)) and reason.startswith("ERROR")]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("block", SKIPPED, ids=[b.where for b in SKIPPED])
def test_skipped_block_compiles(block: Block) -> None:
    """A skipped block still parses; the skip, with its reason, shows in pytest's summary."""
    reason = _skip_reason_or_error(block)
    assert reason is not None and not reason.startswith("ERROR"), reason
    compile(block.source, block.where, "exec")
    pytest.skip(f"{block.where}: {reason}")


class BlockFailed(AssertionError):
    """A documentation block raised; the message names the page, the line and the error."""


def run_blocks(blocks: list[Block], run_dir: Path, data_dir: Path) -> int:
    """Run the unskipped ``blocks`` in order in one namespace, in the current directory.

    Returns the number of blocks run; raises :class:`BlockFailed` at the first block that raises.
    """
    namespace: dict = {"__name__": "__doc_block__"}
    ran = 0
    for block in blocks:
        if _skip_reason_or_error(block) is not None:
            continue
        code = compile(_rewrite(block.source, run_dir, data_dir), block.where, "exec")
        try:
            exec(code, namespace)  # noqa: S102 - running our own documentation is the point
        except Exception as exc:  # noqa: BLE001 - any error of a block fails it, named
            raise BlockFailed(f"the python block at {block.where} raised {type(exc).__name__}: {exc}\n\n"
                              + textwrap.indent(block.source, "    ")) from exc
        ran += 1
    return ran


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES_WITH_BLOCKS, ids=[str(p.relative_to(REPO)) for p in FILES_WITH_BLOCKS])
def test_python_blocks_run(path: Path, smoke_run: Path, phantom_dir: Path, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """One page's blocks, in order, in a temporary working directory, against the smoke run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(path)
    try:
        ran = run_blocks(blocks, smoke_run, phantom_dir)
    finally:
        plt.close("all")
    assert ran == sum(_skip_reason_or_error(b) is None for b in blocks)


def test_harness_runs_blocks_and_reports_failures(tmp_path: Path) -> None:
    """The harness itself: the fence parser, the marker rules and the path rewrite."""
    doc = tmp_path / "page.md"
    doc.write_text(
        "text\n```python\nx = 1\n```\n\n```python\n# doc-test: skip (needs a GPU)\nimport cuda_only\n```\n"
        "```bash\nnot python\n```\n```python\n# doc-test: skp (typo)\n```\n"
        f"```python\nrun = '{DEMO_RUN}'\ndata = '{DEMO_DATA}/Case_P001'\n```\n",
        encoding="utf-8")
    blocks = [Block(REPO / "docs" / "page.md", b.line, b.source) for b in python_blocks(doc)]
    assert [b.line for b in blocks] == [3, 7, 14, 17]
    assert blocks[0].skip_reason is None
    assert blocks[1].skip_reason == "needs a GPU"
    with pytest.raises(ValueError, match="malformed marker"):
        _ = blocks[2].skip_reason
    rewritten = _rewrite(blocks[3].source, Path("/tmp/smoke/run"), Path("/tmp/smoke/data"))
    assert rewritten == "run = '/tmp/smoke/run'\ndata = '/tmp/smoke/data/Case_P001'\n"
    late = Block(REPO / "docs" / "page.md", 1, "x = 1\n# doc-test: skip (late)\n")
    with pytest.raises(ValueError, match="first line"):
        _ = late.skip_reason

    # Blocks share one namespace in order; skipped blocks do not run; a raising block fails, named.
    shared = [Block(REPO / "docs" / "page.md", 1, "x = 2\n"), blocks[1],
              Block(REPO / "docs" / "page.md", 5, "assert x == 2\ny = x + 1\n")]
    assert run_blocks(shared, Path("/r"), Path("/d")) == 2
    broken = [Block(REPO / "docs" / "page.md", 9, "x = 1\n"), Block(REPO / "docs" / "page.md", 12, "1 / 0\n")]
    with pytest.raises(BlockFailed, match=r"docs/page.md:12 raised ZeroDivisionError"):
        run_blocks(broken, Path("/r"), Path("/d"))


_SHELL_FENCE = re.compile(r"^```(?:bash|sh|console)?[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every ``attri-ssc ...`` / ``-m attri_ssc ...`` line of the shell blocks: (where, argv after the program)."""
    import shlex

    found = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for m in _SHELL_FENCE.finditer(text):
            first_line = text.count("\n", 0, m.start(1)) + 1
            lines = m.group(1).replace("\\\n", " ").splitlines()
            for offset, line in enumerate(lines):
                if "attri-ssc" not in line and "attri_ssc" not in line:
                    continue
                tokens = shlex.split(line, comments=True)
                for i, token in enumerate(tokens):
                    if token == "attri-ssc" or (token == "attri_ssc" and i > 0 and tokens[i - 1] == "-m"):
                        found.append((f"{path.relative_to(REPO)}:{first_line + offset}", tokens[i + 1:]))
                        break
    return found


def test_documented_commands_and_options_exist() -> None:
    """Each shell example names a real subcommand, and each --option it uses is one that subcommand takes."""
    import argparse

    from attri_ssc.cli import build_parser
    from attri_ssc.config import load_config
    from attri_ssc.errors import ConfigError

    def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        return {name: p for a in parser._actions if isinstance(a, argparse._SubParsersAction)  # noqa: SLF001
                for name, p in a.choices.items()}

    commands = documented_commands()
    assert len(commands) >= 10, f"found only {len(commands)} documented attri-ssc command lines"
    problems = []
    for where, argv in commands:
        parser, rest = build_parser(), list(argv)
        while rest and (choices := subparsers(parser)) and not rest[0].startswith("-"):
            name = rest.pop(0)
            if name not in choices:
                problems.append(f"{where}: unknown command {name!r}")
                break
            parser = choices[name]
        options = {s for a in parser._actions for s in a.option_strings}  # noqa: SLF001
        problems += [f"{where}: {parser.prog} has no option {t.split('=')[0]}" for t in rest
                     if t.startswith("--") and t.split("=")[0] not in options]
        if parser.prog.endswith(" train"):  # the preset and every --set key=value must make a valid config
            args = {"--config": "demo-2d"}
            sets = [rest[i + 1] for i, t in enumerate(rest[:-1]) if t == "--set"]
            args.update({t: rest[i + 1] for i, t in enumerate(rest[:-1]) if t == "--config"})
            try:
                load_config(args["--config"], sets)
            except ConfigError as exc:
                problems.append(f"{where}: {exc}")
    assert not problems, "\n".join(problems)
