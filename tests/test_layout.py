"""The floor plan, enforced: every import points down the layers, and no two files or packages import
each other. A newcomer can trust the layout (README: "Layout") because this test reads every import, and the
README's table against the tree.

    engine, service.settings        the autodiff engine and its tasks; the one settings object
    service.domain, service.plots   the sweep domain (value types, planning, search); colours, rendering
    service.storage, worker.queue   persistence; the job queue (and the Celery app it sends through)
    service.api, worker             the HTTP API and its dashboard; the workers' tasks
    service.client                  the client side: the Python client, the command line, the demo

Each is a part of the one import name `gradsweep` (gradsweep.engine, ...), and every import says so.
"""

from __future__ import annotations

import ast
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "service", "worker")  # the folders; each is gradsweep.<folder>
# The lowest layer first; a module's layer is that of the longest prefix listed.
LAYERS = [("gradsweep." + prefix for prefix in layer) for layer in [
    ("engine", "service.settings"),
    ("service.domain", "service.palette", "service.plots"),
    ("service.storage", "service.migrations", "worker.app", "worker.embedded_broker", "worker.queue"),
    ("service.api", "worker"),
    ("service.client", "service.__main__", "service", "__main__"),
]]
LAYERS = [tuple(layer) for layer in LAYERS] + [("gradsweep",)]


def module_name(path: Path) -> str:
    parts = ("gradsweep", *path.relative_to(ROOT).with_suffix("").parts)
    parts = parts[1:] if parts[1] == "gradsweep" else parts  # the package's own folder
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    found = [(len(prefix), index) for index, prefixes in enumerate(LAYERS) for prefix in prefixes
             if module == prefix or module.startswith(prefix + ".")]
    assert found, f"{module} is in no layer: add it to LAYERS"
    return max(found)[1]


def modules() -> dict[str, Path]:
    return {module_name(path): path for package in (*PACKAGES, "gradsweep") for path in (ROOT / package).rglob("*.py")
            if "versions" not in path.parts}  # migrations' revisions import nothing of ours


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Our modules the file imports: `from a.b import c` names a.b.c when that is a module, else a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in (*PACKAGES, "gradsweep")}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def test_every_import_names_the_package_gradsweep():
    # From the repository's folder `engine.x` would import too, as a second copy of gradsweep.engine.x.
    bare = sorted(f"{module} imports {imported}" for module, imported_set in graph().items()
                  for imported in imported_set if imported.split(".")[0] in PACKAGES)
    assert not bare, bare


def test_pyproject_installs_every_package():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {module_name(path.parent / "__init__.py") for package in (*PACKAGES, "gradsweep")
                for path in (ROOT / package).rglob("__init__.py")}
    assert packages == listed


def test_every_import_points_down_the_layers():
    upward = [f"{module} (layer {layer(module)}) imports {imported} (layer {layer(imported)})"
              for module, imported_set in graph().items() for imported in imported_set
              if layer(imported) > layer(module)]
    assert not upward, "\n".join(sorted(upward))


def test_the_engine_imports_numpy_and_itself_only():
    for name, path in modules().items():
        if name.startswith("gradsweep.engine"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "level", 0) == 0:
                    names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                    for imported in names:
                        top = imported.split(".")[0]
                        assert (imported.startswith("gradsweep.engine") or top in {"numpy", "__future__"}
                                or top in _stdlib()), (name, imported)


def test_no_two_files_and_no_two_packages_import_each_other():
    edges = graph()
    files = [f"{a} <-> {b}" for a in edges for b in edges[a] if b in edges and a in edges[b] and a < b
             and not (a.startswith(b + ".") or b.startswith(a + "."))]  # a package's __init__ re-exports its parts
    packages: dict[str, set[str]] = defaultdict(set)
    for module, imported in edges.items():
        for other in imported:
            if _package(module) != _package(other):
                packages[_package(module)].add(_package(other))
    cycles = [f"{a} <-> {b}" for a in packages for b in packages[a] if a in packages.get(b, ()) and a < b]
    assert not files and not cycles, files + cycles


def test_no_private_module_is_imported_from_another_package():
    crossing = [f"{module} imports {imported}" for module, imported_set in graph().items()
                for imported in imported_set
                if any(part.startswith("_") and part != "__main__" for part in imported.split("."))
                and _package(imported) != _package(module)]
    assert not crossing, crossing


def _package(module: str) -> str:
    """The layer's package a module belongs to: gradsweep.service.api.routes.plots -> gradsweep.service.api."""
    parts = module.split(".")
    return ".".join(parts[:3]) if parts[:2] == ["gradsweep", "service"] else ".".join(parts[:2])


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)


def test_the_readmes_layout_names_every_package_and_only_what_exists():
    text = (ROOT / "README.md").read_text()
    table = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    named = {path.rstrip("/") for row in table.splitlines() if row.startswith("| `")
             for path in row.split(" | ")[0].strip("| ").replace("`", "").split(", ")}
    assert all((ROOT / path).exists() for path in named), sorted(path for path in named if not (ROOT / path).exists())
    packages = {str(path.parent.relative_to(ROOT)) for package in PACKAGES for path in (ROOT / package).rglob("__init__.py")}
    unnamed = {package for package in packages if not any(
        package == path or package.startswith(path + "/") or (package in PACKAGES and path.startswith(package + "/"))
        for path in named)}  # a top folder may be named by its parts
    assert not unnamed, f"packages the README's layout does not name: {sorted(unnamed)}"
