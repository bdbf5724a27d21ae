"""Imports point down the layers of STYLE.md, never up: read from the source with ast, function-level ones too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "custseg"

#: Top to bottom. A module may import its own layer and the layers below it. A package
#: (report/, evaluation/, embedders/, io/) is one layer. The package's __init__ is above
#: everything and imported by no module of the package.
LAYERS = [
    ("__main__", "cli", "distributed", "export", "serve"),
    ("workflow",),
    ("persistence",),
    ("report",),
    ("profiling", "eda"),
    ("monitoring",),
    ("evaluation",),
    ("pipeline",),
    ("clustering",),
    ("embedders",),
    ("preprocessing",),
    ("schema",),
    ("io",),
    ("config",),
    ("exceptions",),
    ("_version",),
]
RANK = {name: depth for depth, names in enumerate(LAYERS) for name in names}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def _dotted(path: Path) -> list[str]:
    """``custseg.report.plots`` as ``["report", "plots"]``; a package's ``__init__`` as the package."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imported(path: Path) -> list[tuple[int, list[str]]]:
    return _imports_in(path.read_text(encoding="utf-8"), _dotted(path), path.name == "__init__.py")


def _imports_in(source: str, here: list[str], is_package: bool) -> list[tuple[int, list[str]]]:
    """(line, module inside custseg) of every import in ``source``, wherever it is in the file.

    ``[]`` is the package's own ``__init__``.
    """
    package = here if is_package else here[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[1:]) for alias in node.names
                      if alias.name.split(".")[0] == "custseg"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
            elif (node.module or "").split(".")[0] == "custseg":
                base = []
            else:
                continue
            module = base + [p for p in (node.module or "").split(".") if p and p != "custseg"]
            if node.module and not (node.level == 0 and node.module == "custseg"):
                found.append((node.lineno, module))
                continue
            # "from . import x": x is a module of that package, or a name of its __init__
            for alias in node.names:
                sub = PACKAGE.joinpath(*module, alias.name)
                is_module = sub.is_dir() or sub.with_suffix(".py").is_file()
                found.append((node.lineno, module + [alias.name] if is_module else module))
    return found


def test_every_module_has_a_layer():
    unplaced = sorted({"/".join(_dotted(p)) for p in _modules() if _dotted(p)[0] not in RANK})
    assert not unplaced, f"place these modules in LAYERS (and STYLE.md's list): {unplaced}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    here = _dotted(path)
    if here[0] not in RANK:
        pytest.skip("not placed in a layer (test_every_module_has_a_layer fails)")
    upward = []
    for line, target in _imported(path):
        if not target:
            upward.append(f"line {line}: imports the package's __init__")
        elif target[0] in RANK and RANK[target[0]] < RANK[here[0]]:
            upward.append(f"line {line}: {'.'.join(here)} ({here[0]}) imports {'.'.join(target)} ({target[0]})")
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)


def test_the_checker_sees_function_level_and_relative_imports():
    """The parser above finds an import however it is written."""
    source = ("from __future__ import annotations\n"
              "def f():\n    from ..workflow import train\n    import custseg.cli\n"
              "from .. import report\nfrom . import metrics\nfrom .selection import select_k\n"
              "import custseg\nimport numpy\n")
    found = [".".join(t) for _, t in _imports_in(source, ["evaluation", "probe"], is_package=False)]
    assert sorted(found) == sorted(["workflow", "cli", "report", "evaluation.metrics", "evaluation.selection", ""])


def test_the_command_line_starts_without_torch_or_scikit_learn():
    """``custseg --help`` and option errors answer at once: the heavy libraries load where a command needs them."""
    import subprocess
    import sys

    code = ("import sys, custseg, custseg.cli, custseg.exceptions, custseg.config\n"
            "heavy = sorted(m for m in ('torch', 'sklearn', 'pandas', 'matplotlib') if m in sys.modules)\n"
            "print(','.join(heavy))\n"
            "from custseg import NotFittedError, SegmentationPipeline\n"
            "from sklearn.exceptions import NotFittedError as Base\n"
            "assert issubclass(NotFittedError, Base) and NotFittedError.__module__ == 'custseg.exceptions'\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(PACKAGE.parent), "PATH": ""})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ""
