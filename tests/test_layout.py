"""House rules that keep the code base navigable: file size and one-way imports."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY_FILES = sorted(
    p for d in ("src", "hpc", "analysis", "tests", "bench") for p in (ROOT / d).rglob("*.py") if ".venv" not in p.parts
)
# geopeft's layers: a module may import its own layer and lower ones only.
LAYERS = {"data": 1, "cache": 2, "models": 3, "tuning": 4, "train": 5, "cell": 6, "predict": 7}
# hpc's layers: scheduler <- state <- plan <- prepare <- launch <- the user's verbs (hpc.sweep, status, cli, ...).
HPC_LAYERS = {"scheduler": 1, "state": 2, "plan": 3, "prepare": 4, "launch": 5}
ANALYSIS_MAY_IMPORT = {"geopeft", "geopeft.result", "geopeft.io", "geopeft.paths", "geopeft.errors"}


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if parts[0] == "geopeft" and len(parts) > 1 else 0


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_stay_short(path):
    n = len(path.read_text().splitlines())
    assert n <= 400, f"{path.relative_to(ROOT)} has {n} lines; split it (house rule: one responsibility, <= 400 lines)"


def test_geopeft_never_imports_hpc_or_analysis_and_layers_point_down():
    problems = []
    for path in (ROOT / "src" / "geopeft").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts)
        for imp in imports(path):
            top = imp.split(".")[0]
            if top in ("hpc", "analysis"):
                problems.append(f"{module} imports {imp}")
            elif top == "geopeft" and layer(imp) > layer(module):
                problems.append(f"{module} (layer {layer(module)}) imports {imp} (layer {layer(imp)})")
    assert not problems, "\n".join(problems)


def test_analysis_reads_results_only():
    problems = []
    for path in (ROOT / "analysis").rglob("*.py"):
        for imp in imports(path):
            top = imp.split(".")[0]
            if top in ("torch", "hpc") or (top == "geopeft" and imp not in ANALYSIS_MAY_IMPORT):
                problems.append(f"{path.name} imports {imp}")
    assert not problems, "\n".join(problems)


def hpc_layer(module: str) -> int:
    parts = module.split(".")
    return HPC_LAYERS.get(parts[1], 6) if parts[0] == "hpc" and len(parts) > 1 else 6


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_hpc_layers_point_down_and_form_no_cycle():
    graph: dict[str, set[str]] = {}
    problems = []
    for path in (ROOT / "hpc").rglob("*.py"):
        module = module_name(path)
        deps = {imp for imp in imports(path) if imp.split(".")[0] == "hpc" and imp not in ("hpc", module)}
        graph[module] = deps
        for imp in deps:
            if hpc_layer(imp) > hpc_layer(module):
                problems.append(f"{module} (layer {hpc_layer(module)}) imports {imp} (layer {hpc_layer(imp)})")
    assert not problems, "\n".join(problems)
    seen: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(module: str, trail: list[str]) -> None:
        seen[module] = 1
        for dep in sorted(graph.get(module, ())):
            if seen.get(dep) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*trail[trail.index(dep) :], dep])}")
            if dep in graph and not seen.get(dep):
                visit(dep, [*trail, dep])
        seen[module] = 2

    for module in sorted(graph):
        if not seen.get(module):
            visit(module, [module])


def test_status_imports_nothing_from_the_submission_side():
    code = (
        "import sys, hpc.status, hpc.state.cells; "
        "bad = [m for m in sys.modules if m.startswith(('hpc.launch', 'hpc.sweep', 'hpc.prepare', 'submitit'))]; "
        "print(', '.join(bad), file=sys.stderr); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"geopeft status imports the submission side: {done.stderr}"


def test_status_path_does_not_import_torch():
    code = "import sys, hpc.cli, hpc.status, hpc.state.cells, hpc.state.manifest; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
