"""The layering of docs/architecture.md holds for every import in src/vaekit, lazy ones included."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "vaekit"
PICTURE_MODULES = ("pictures.png", "pictures.figures")  # tensors in, files out: never a model
MODEL_LAYERS = ("parts", "model", "objectives", "training", "evaluation")
MAX_LINES = 400  # files near 300 lines; none may grow past this


def layers() -> dict[str, int]:
    """top-level module or package → its layer's height, from the ```layers block of the document."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.DOTALL).group(1)
    height = {}
    for level, line in enumerate(block.strip().splitlines()):
        _, members = line.split(":", 1)
        height.update({m: level for m in members.split()})
    return height


def modules() -> dict[str, Path]:
    """'parts.priors' → its file, for every module of the package ('__init__' for the package itself)."""
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """The vaekit modules `name` imports, anywhere in the file, as dotted names inside the package."""
    is_package = path.name == "__init__.py"
    package = name.split(".") if is_package and name != "__init__" else name.split(".")[:-1]
    if name == "__init__":
        package = []
    known = modules()
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name[len("vaekit."):] for a in node.names if a.name.startswith("vaekit.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("vaekit"):
                target = node.module[len("vaekit."):] if node.module != "vaekit" else ""
            else:
                continue
            for a in node.names:  # `from . import x`: x may be a module
                sub = f"{target}.{a.name}" if target else a.name
                found.add(sub if sub in known else target)
    return {m for m in found if m}


def top(module: str) -> str:
    return module.split(".")[0]


def test_every_module_has_a_layer():
    height = layers()
    assert sorted({top(m) for m in modules()} - set(height)) == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_imports_a_layer_above_its_own(name):
    height = layers()
    up = sorted(m for m in imports_of(name, modules()[name]) if height[top(m)] > height[top(name)])
    assert up == [], f"{name} (layer {height[top(name)]}) imports from above: {up}"


@pytest.mark.parametrize("name", PICTURE_MODULES)
def test_picture_writers_never_import_or_call_a_model(name):
    near = sorted(m for m in imports_of(name, modules()[name]) if top(m) in MODEL_LAYERS)
    assert near == [], f"{name} imports {near}"
    tree = ast.parse(modules()[name].read_text())
    calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert not calls & {"sample", "encode", "decode", "reconstruct", "posterior", "prior"}, name


def test_no_import_cycle():
    graph = {name: imports_of(name, path) - {name} for name, path in modules().items()}
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                pytest.fail("import cycle: " + " → ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("name", sorted(modules()))
def test_files_stay_short(name):
    lines = modules()[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{name}: {lines} lines"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The test above would fail on a lazy upward import: a function in parts importing the trainer."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ..training.loop import train_epoch\n")
    found = imports_of("parts.bad", bad)
    assert found == {"training.loop"} and layers()["training"] > layers()["parts"]


def test_the_readme_examples_use_only_public_names_and_the_readme_names_every_public_one():
    import vaekit

    readme = (ROOT / "README.md").read_text()
    used = {n for block in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) for n in re.findall(r"\bvaekit\.(\w+)", block)}
    assert used - set(vaekit.__all__) == set(), "README examples use names outside vaekit.__all__"
    assert [n for n in vaekit.__all__ if f"`{n}`" not in readme and f"vaekit.{n}" not in readme] == []
