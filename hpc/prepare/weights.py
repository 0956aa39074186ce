"""Pretrained weights on the login node: which files a sweep needs, fetching them, and the catalogue listing.

Compute nodes usually have no internet, so every file a sweep's cells name is fetched once, here, into the weights
root (the grid's ``weights`` directory), and :func:`check_weights` stops a sweep before anything is submitted while
one is missing. A download goes to a temporary name, is hashed on the way, checked against a pinned SHA-256 when
one is known, renamed into place and recorded in its ``.sha256`` sidecar (see :mod:`geopeft.models.weights.integrity`).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from geopeft.errors import SubmitError, WeightsError
from geopeft.io import temporary_save_path
from geopeft.models.weights.integrity import check_hex, read_sidecar, verify_file, write_sidecar
from geopeft.models.weights.pretrained import NO_WEIGHTS, fetch_hint, get_weights, weights_file, weights_names
from geopeft.spec import CellSpec
from geopeft.text import aligned

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Fetched:
    """The outcome of fetching one entry: where it lies, its SHA-256, and whether it was downloaded now."""

    name: str
    path: Path
    sha256: str
    downloaded: bool


@dataclass(frozen=True)
class CatalogueRow:
    """One line of ``geopeft weights``: an entry and the state of its file under a weights root."""

    name: str
    backbones: tuple[str, ...]
    filename: str
    url: str
    state: str


def needed_weights(cells: Iterable[CellSpec]) -> list[str]:
    """The distinct catalogue names the cells load, sorted (``none`` excluded)."""
    return sorted({c.model.weights for c in cells} - {NO_WEIGHTS})


def check_weights(cells: Iterable[CellSpec], root: str | Path, where: str, grid: str | Path | None = None) -> None:
    """Fail before submitting when a weights file the cells need is not under ``root``.

    Args:
        cells: the cells about to be submitted.
        root: the weights root of the run environment.
        where: the grid file or sweep directory, named in the message.
        grid: the grid file, for the one command that fetches every missing file.

    Raises:
        SubmitError: listing every missing file and the commands that fetch them.
    """
    missing = [(name, weights_file(name, root)) for name in needed_weights(cells)]
    missing = [(name, path) for name, path in missing if not path.is_file()]
    if not missing:
        return
    files = "; ".join(f"{name}: {path}" for name, path in missing)
    if grid is not None:
        how = f"geopeft weights fetch --grid {grid} (or make weights GRID={grid})"
    else:
        how = " && ".join(fetch_hint(name, root) for name, _ in missing)
    raise SubmitError(
        f"{where}: {len(missing)} pretrained weights file(s) missing: {files}; compute nodes cannot download them, "
        f"so fetch them first on a node with internet access: {how}"
    )


def file_state(name: str, root: str | Path) -> str:
    """``missing``, ``unverified`` (no sidecar yet) or ``sha256 <first 12 hex>`` as recorded, from the files alone."""
    path = weights_file(name, root)
    if not path.is_file():
        return "missing"
    recorded = read_sidecar(path)
    return "unverified" if recorded is None else f"sha256 {recorded[:12]}"


def catalogue(root: str | Path | None = None) -> list[CatalogueRow]:
    """Every catalogue entry, with its file state under ``root`` (``-`` without a root)."""
    rows = []
    for name in weights_names():
        entry = get_weights(name)
        state = file_state(name, root) if root is not None else "-"
        rows.append(CatalogueRow(name, entry.backbones, entry.filename, entry.url, state))
    return rows


def format_catalogue(rows: list[CatalogueRow]) -> str:
    """A plain-text table of :func:`catalogue` rows."""
    header = ("name", "backbones", "file", "state")
    lines = [(r.name, ", ".join(r.backbones), r.filename, r.state) for r in rows]
    return "\n".join(aligned([header, *lines]))


def verify(name: str, root: str | Path, *, sha256: str | None = None) -> str:
    """Hash the file of ``name`` under ``root``, check it (sidecar, catalogue pin, ``sha256``), record the sidecar.

    Raises:
        WeightsError: the file is missing or a hash differs.
    """
    entry = get_weights(name)
    path = weights_file(name, root)
    if not path.is_file():
        raise WeightsError(f"weights {name}: {path} does not exist; fetch it: {fetch_hint(name, root)}")
    fix = f"{fetch_hint(name, root)} --force"
    actual = verify_file(path, pinned=entry.sha256, fix=fix)
    if sha256 is not None:
        actual = verify_file(path, pinned=sha256, fix=fix)
    write_sidecar(path, actual)
    return actual


def fetch(
    name: str, root: str | Path, *, url: str | None = None, sha256: str | None = None, force: bool = False
) -> Fetched:
    """Download the file of catalogue entry ``name`` into ``root`` (atomically), or verify the one already there.

    Args:
        name: the catalogue name.
        root: the weights root.
        url: download from here instead of the catalogue URL (a mirror, or a ``file://`` URL).
        sha256: the SHA-256 the file must have, besides any pinned in the catalogue.
        force: download again even when the file exists.

    Raises:
        WeightsError: the download fails, or the file's hash differs from a pin or from its sidecar.
    """
    entry = get_weights(name, "geopeft weights fetch")
    pins = [check_hex(p, f"the SHA-256 for {name}") for p in (entry.sha256, sha256) if p is not None]
    path = weights_file(name, root)
    if path.is_file() and not force:
        return Fetched(name, path, verify(name, root, sha256=sha256), downloaded=False)
    source = url or entry.url
    digest = hashlib.sha256()
    with temporary_save_path(path) as tmp:
        try:
            with urllib.request.urlopen(source, timeout=60) as response, open(tmp, "wb") as out:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise WeightsError(
                f"weights {name}: cannot download {source} ({exc}); check the URL and the network, or fetch it "
                f"elsewhere and copy it to {path}"
            ) from None
        actual = digest.hexdigest()
        wrong = [p for p in pins if p != actual]
        if wrong:
            raise WeightsError(
                f"weights {name}: {source} gave a file with SHA-256 {actual}, but {wrong[0]} is pinned; nothing was "
                "kept. Check the URL (a mirror may serve another revision)"
            )
    write_sidecar(path, actual)
    return Fetched(name, path, actual, downloaded=True)
