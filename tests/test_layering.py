"""The package's layering (docs/architecture.md), checked on the source with ``ast``.

Every module under ``src/attri_ssc`` is parsed (imports inside functions included) and
mapped to a layer; an import may only go to the same layer or below, every module must be
mapped (a new package must be classified here and in docs/architecture.md), and no two
modules may import each other, directly or through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "attri_ssc"

#: Layers, bottom to top (docs/architecture.md). Keys are module names or package
#: prefixes relative to ``attri_ssc``; the longest matching key wins.
LAYERS: dict[str, int] = {
    # 1 core
    "errors": 1, "config": 1, "dataclass_io": 1, "seeding": 1, "io_utils": 1,
    # ... with the per-concern config dataclasses that ``config.ExperimentConfig`` composes
    # and the attribute and label registries their validation reads (they import only core)
    "data.config": 1, "models.config": 1, "baselines.config": 1, "data.attributes": 1, "data.labels": 1,
    # 2 data
    "data": 2,
    # 3 networks and losses (no saving, no training)
    "nn": 3, "models": 3, "baselines": 3, "losses": 3,
    # 4 training and the checkpoint/run-folder code
    "training": 4, "checkpoint": 4, "runs": 4, "run_lock": 4,
    # 5 measurement
    "evaluation": 5,
    # 6 interpretation
    "interpret": 6,
    # 7 reports rendered from saved JSON
    "reports": 7,
    # 8 faces
    "": 8,  # the package's __init__ (re-exports the Python API)
    "__main__": 8, "cli": 8, "commands": 8, "api": 8, "serve": 8,
}
LAYER_NAMES = {1: "core", 2: "data", 3: "networks", 4: "training/runs", 5: "evaluation",
               6: "interpret", 7: "reports", 8: "faces"}

#: Among the faces: the Python API imports no other face; the explorer (serve) may use the
#: API; the CLI (cli, commands, __main__) may use both.
FACE_RANK: dict[str, int] = {"": 0, "api": 0, "serve": 1, "__main__": 2, "cli": 2, "commands": 2}


def _key(module: str, table: dict[str, int]) -> str | None:
    """The longest key of ``table`` that is ``module`` or a package prefix of it."""
    rel = module.removeprefix(PACKAGE).removeprefix(".")
    parts = rel.split(".") if rel else []
    for n in range(len(parts), -1, -1):
        candidate = ".".join(parts[:n])
        if candidate in table and (n > 0 or not parts):
            return candidate
    return None


def layer_of(module: str) -> int | None:
    key = _key(module, LAYERS)
    return None if key is None else LAYERS[key]


def module_name(path: Path, src: Path) -> str:
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports anywhere in its body (functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        # ``attri_ssc.a.b.C`` → the longest known module prefix
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in known:
                return ".".join(parts[:n])
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE and (target := resolve(alias.name)):
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            if origin.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:  # ``from pkg import submodule`` names a module
                target = resolve(f"{origin}.{alias.name}") or resolve(origin)
                if target:
                    found.add(target)
    found.discard(module)
    return found


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    files = sorted((src / PACKAGE).rglob("*.py"))
    names = {module_name(p, src): p for p in files}
    known = set(names)
    return {name: imports_of(path, name, known) for name, path in names.items()}


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """Unmapped modules and imports that go up (or, among the faces, against FACE_RANK)."""
    problems = []
    for module in sorted(graph):
        if layer_of(module) is None:
            problems.append(f"{module}: not mapped to a layer (add it to LAYERS and docs/architecture.md)")
    for module in sorted(graph):
        low = layer_of(module)
        if low is None:
            continue
        for target in sorted(graph[module]):
            high = layer_of(target)
            if high is None:
                continue
            if high > low:
                problems.append(f"{module} (layer {low} {LAYER_NAMES[low]}) imports {target} "
                                f"(layer {high} {LAYER_NAMES[high]}): upward import")
            elif high == low == 8:
                a, b = FACE_RANK[_key(module, FACE_RANK)], FACE_RANK[_key(target, FACE_RANK)]
                if b > a:
                    problems.append(f"{module} imports {target}: a face may not import a face above it")
    return problems


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        # iterative Tarjan to stay clear of the recursion limit
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            advanced = False
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    advanced = True
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


# --- the package itself ----------------------------------------------------------------------


def test_every_module_is_mapped_and_no_import_goes_up():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the package
    problems = layering_violations(graph)
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_no_import_cycle():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_pipeline_modules_sit_on_their_layers():
    assert layer_of("attri_ssc.interpret.editing") == 6
    assert layer_of("attri_ssc.evaluation.weights") == 5
    assert layer_of("attri_ssc.checkpoint") == 4
    assert layer_of("attri_ssc.baselines.attri_vae") == 3
    assert layer_of("attri_ssc") == 8
    assert layer_of("attri_ssc.serve.app") == 8
    assert layer_of("attri_ssc.somethingnew") is None
    assert layer_of("attri_ssc.models.config") == 1 and layer_of("attri_ssc.models.mapper") == 3


# --- the checker can fail ------------------------------------------------------------------------


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def synthetic(tmp_path):
    return lambda files: import_graph(_write_package(tmp_path, {"__init__.py": "", **files}))


def test_checker_flags_an_upward_import_even_inside_a_function(synthetic):
    graph = synthetic({
        "models/__init__.py": "",
        "models/net.py": "def build():\n    from attri_ssc.interpret.editing import edit\n",
        "interpret/__init__.py": "",
        "interpret/editing.py": "from ..models import net\nedit = None\n",
    })
    assert graph["attri_ssc.models.net"] == {"attri_ssc.interpret.editing"}
    assert graph["attri_ssc.interpret.editing"] == {"attri_ssc.models.net"}  # relative import resolved
    problems = layering_violations(graph)
    assert len(problems) == 1 and "attri_ssc.models.net (layer 3" in problems[0] and "upward" in problems[0]
    assert import_cycles(graph) == [["attri_ssc.interpret.editing", "attri_ssc.models.net"]]


def test_checker_flags_unmapped_modules_and_face_order(synthetic):
    graph = synthetic({
        "gadgets.py": "import attri_ssc.errors\n",
        "errors.py": "",
        "api.py": "from attri_ssc import commands\n",
        "commands/__init__.py": "from attri_ssc import api\n",
        "serve/__init__.py": "",
        "serve/app.py": "from attri_ssc.api import x\n",
    })
    problems = layering_violations(graph)
    assert any("attri_ssc.gadgets: not mapped" in p for p in problems)
    assert any(p.startswith("attri_ssc.api imports attri_ssc.commands") for p in problems)
    assert not any(p.startswith("attri_ssc.serve.app") or p.startswith("attri_ssc.commands ")
                   for p in problems)
    assert import_cycles(graph) == [["attri_ssc.api", "attri_ssc.commands"]]


def test_checker_finds_a_longer_cycle(synthetic):
    graph = synthetic({
        "evaluation/__init__.py": "",
        "evaluation/a.py": "from attri_ssc.evaluation import b\n",
        "evaluation/b.py": "import attri_ssc.evaluation.c\n",
        "evaluation/c.py": "from attri_ssc.evaluation.a import f\n",
        "evaluation/d.py": "from attri_ssc.evaluation import a\n",
    })
    assert not layering_violations(graph)
    assert import_cycles(graph) == [["attri_ssc.evaluation.a", "attri_ssc.evaluation.b", "attri_ssc.evaluation.c"]]
