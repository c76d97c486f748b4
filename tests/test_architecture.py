"""The package's one direction of calls, checked on the source: the compiled core imports
nothing above it, the reference nothing compiled, no two modules import each other (at any
depth, function-level imports included), and nothing imports the command line."""
import ast
import pathlib
import re

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "fastprop"
if not SRC.is_dir():
    pytest.skip("runs on the source tree", allow_module_level=True)


def _module_name(path):
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(path):
    """Every fastprop module ``path`` imports, at any depth of the file."""
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # from package import module: the module (the package is only its container)
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [n for n in subs if n in MODULES] or [node.module]
        else:
            continue
        for name in names:
            if name.startswith("fastprop") and (name in MODULES or name.startswith(
                    "fastprop._core")):
                out.add(name)
    return out


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _reaches(start, goal):
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt == goal:
                return True
            if nxt not in seen and nxt != "fastprop":
                seen.add(nxt)
                todo.append(nxt)
    return False


def test_no_import_cycles():
    cycles = sorted(m for m in GRAPH if m != "fastprop" and _reaches(m, m))
    assert not cycles, f"modules on an import cycle: {cycles}"


@pytest.mark.parametrize("a,b", [("fastprop.io", "fastprop.model"),
                                 ("fastprop._bench", "fastprop.__main__")])
def test_one_direction(a, b):
    assert not (_reaches(a, b) and _reaches(b, a))
    assert not _reaches(a, b) or not _reaches(b, a)
    assert b not in GRAPH[a] or a not in GRAPH[b]


def test_nothing_imports_the_command_line():
    users = [m for m, deps in GRAPH.items() if "fastprop.__main__" in deps]
    assert users == []
    assert [m for m, deps in GRAPH.items() if "fastprop._bench" in deps] == ["fastprop.__main__"]


def test_the_compiled_core_imports_nothing_above_it():
    for path in sorted((SRC / "_core").glob("*.p*")):
        if path.suffix not in (".pyx", ".pxd", ".py"):
            continue
        for line in path.read_text().splitlines():
            m = re.match(r"\s*(?:from|c?import)\s+(fastprop[\w.]*)", line)
            if m:
                assert m.group(1).startswith("fastprop._core"), f"{path.name}: {line.strip()}"


def test_the_reference_imports_nothing_compiled():
    for name, deps in GRAPH.items():
        if name.startswith("fastprop.reference"):
            outside = {d for d in deps if not d.startswith("fastprop.reference")}
            assert not outside, f"{name} imports {outside}"
