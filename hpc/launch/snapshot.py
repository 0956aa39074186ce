"""The code a SLURM submission runs: a content-addressed copy of the packages, so later edits change no queued cell.

A sweep can sit in the queue for days while its author keeps editing the checkout (an editable install). Each
submission therefore copies the ``geopeft``, ``hpc`` and ``analysis`` packages as they are into
``<sweep>/code/<hash>/`` and its scripts put that folder first on ``PYTHONPATH``; a requeued or rerun task
imports the same code as the first. The folder name is a hash of every file's path and bytes: submitting unchanged
code again reuses the copy, and a copy is written under a temporary name and renamed, so none is ever partial.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

from geopeft.errors import SubmitError
from geopeft.paths import SweepPaths

#: The import packages a cell needs (``analysis`` too: ``hpc.cli`` reaches it for tables and reports).
PACKAGES = ("geopeft", "hpc", "analysis")
#: Left out of the copy: bytecode caches.
IGNORED = ("__pycache__", "*.pyc")


def package_dirs() -> dict[str, Path]:
    """Where each of :data:`PACKAGES` is imported from (found without importing it)."""
    dirs: dict[str, Path] = {}
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise SubmitError(f"package {name!r} cannot be found to snapshot; install the project (make setup)")
        dirs[name] = Path(spec.origin).parent
    return dirs


def _files(top: Path) -> list[Path]:
    return sorted(p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def code_hash(dirs: dict[str, Path]) -> str:
    """12 hex digits of the SHA-256 over every file's package-relative path and bytes."""
    digest = hashlib.sha256()
    for name, top in sorted(dirs.items()):
        for path in _files(top):
            digest.update(f"{name}/{path.relative_to(top).as_posix()}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:12]


def snapshot(root: Path, *, write: bool = True) -> Path:
    """The snapshot folder of the current code under sweep ``root`` (written unless ``write`` is False).

    Args:
        root: the sweep directory.
        write: copy the packages when the snapshot does not exist yet (a dry run only names it).

    Returns:
        ``<root>/code/<hash>``, holding one folder per package.
    """
    dirs = package_dirs()
    final = SweepPaths(Path(root)).code_dir / code_hash(dirs)
    if not write or final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name, top in dirs.items():
            shutil.copytree(top, tmp / name, ignore=shutil.ignore_patterns(*IGNORED))
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():  # another submitter may have renamed the same snapshot first
            raise
    return final
