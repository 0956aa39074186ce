"""The analysis package stays light: no torch, no heavy geopeft module (STYLE.md §7 rule 2)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"
ALLOWED_GEOPEFT = {"geopeft.result", "geopeft.io", "geopeft.paths", "geopeft.errors"}
#: The modules that draw figures: matplotlib only inside their functions.
LAZY_MATPLOTLIB = ("plots.py", "curves.py")
HEAVY = ("torch", "torchvision", "timm", "peft", "h5py", "rasterio", "submitit", "matplotlib")


def test_importing_analysis_pulls_no_torch() -> None:
    code = (
        "import json, sys\n"
        "import analysis, analysis.collect, analysis.stats, analysis.tables, analysis.report, analysis.plots\n"
        "import analysis.curves, analysis.history, analysis.document\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    modules = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"importing analysis loaded {heavy}"
    geopeft = {m for m in modules if m.startswith("geopeft.")}
    assert geopeft <= ALLOWED_GEOPEFT, f"importing analysis loaded {sorted(geopeft - ALLOWED_GEOPEFT)}"
    assert not any(m == "hpc" or m.startswith("hpc.") for m in modules)


def test_analysis_sources_import_only_light_modules() -> None:
    files = sorted(ANALYSIS.glob("*.py"))
    assert files
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        lazy = {
            id(inner)
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef) and path.name in LAZY_MATPLOTLIB
            for inner in ast.walk(fn)
        }
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                if root == "matplotlib" and (id(node) in lazy or _type_checking_only(tree, node)):
                    continue  # the figure modules import matplotlib inside the function that draws
                assert root not in HEAVY and root != "hpc", f"{path.name} imports {name}"
                if root == "geopeft":
                    assert name in ALLOWED_GEOPEFT, f"{path.name} imports {name}"


def _type_checking_only(tree: ast.Module, node: ast.AST) -> bool:
    """Whether ``node`` sits in an ``if TYPE_CHECKING:`` block (never executed)."""
    return any(
        isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING" and node in list(ast.walk(block))
        for block in tree.body
    )


def test_analysis_files_stay_short() -> None:
    for path in ANALYSIS.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name
