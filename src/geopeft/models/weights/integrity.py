"""The integrity of a local weights file: its SHA-256 and the ``<file>.sha256`` sidecar that records it.

The official checkpoints are published without a hash we could pin here (the catalogue cannot be checked against
the network on this side), so integrity is trust-on-first-use, made explicit:

* ``geopeft weights fetch`` hashes a file while downloading it and writes the sidecar next to it; a hash given with
  ``--sha256`` (or pinned in the catalogue) must match first. The Hugging Face file page shows the SHA-256 of every
  LFS file, which is the value to pin.
* A file put in place by hand gets its sidecar from ``geopeft weights verify`` or, failing that, from its first
  successful load (after the loader accepted every key and shape).
* Every later load re-hashes the file and compares it with the sidecar (and the pin, when there is one): a file
  that changed, was truncated or was swapped is a :class:`~geopeft.errors.WeightsError`, not silently new weights.

The sidecar uses ``sha256sum``'s format (``<hex>  <file name>``), so ``sha256sum -c`` checks it too. Hashes are
memoised per process for an unchanged file (same inode, size and modification time), so building several models
from one file, or recording the hash in a result, reads the file once.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from geopeft.errors import WeightsError
from geopeft.io import atomic_write_text

__all__ = [
    "SIDECAR_SUFFIX",
    "check_hex",
    "file_sha256",
    "read_sidecar",
    "sidecar_path",
    "verify_file",
    "write_sidecar",
]

#: Suffix of the file that records a weights file's SHA-256 (``Prithvi_EO_V2_300M.pt.sha256``).
SIDECAR_SUFFIX = ".sha256"
_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_MEMO: dict[tuple[str, int, int, int], str] = {}


def sidecar_path(path: str | Path) -> Path:
    """The sidecar of ``path``: the same name with :data:`SIDECAR_SUFFIX` appended."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def check_hex(value: str, what: str) -> str:
    """``value`` lower-cased, after checking it is 64 hex digits; ``what`` names it in the error."""
    lowered = value.strip().lower()
    if not _HEX.fullmatch(lowered):
        raise WeightsError(f"{what} must be a SHA-256: 64 hex digits, got {value!r}")
    return lowered


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of the file at ``path`` (hex), memoised while the file's inode, size and mtime stay the same.

    Raises:
        WeightsError: the file does not exist.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise WeightsError(f"weights file {path} does not exist") from None
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        _MEMO[key] = digest.hexdigest()
    return _MEMO[key]


def read_sidecar(path: str | Path) -> str | None:
    """The SHA-256 recorded for ``path``, or None when it has no sidecar.

    Raises:
        WeightsError: the sidecar exists but does not start with 64 hex digits.
    """
    side = sidecar_path(path)
    if not side.is_file():
        return None
    text = side.read_text(encoding="utf-8").split()
    if not text or not _HEX.fullmatch(text[0].lower()):
        raise WeightsError(
            f"{side} does not start with a SHA-256 (64 hex digits); delete it and run geopeft weights verify "
            "to record the file's hash again"
        )
    return text[0].lower()


def write_sidecar(path: str | Path, sha256: str) -> Path:
    """Record ``sha256`` for ``path`` in its sidecar (atomically, ``sha256sum`` format); return the sidecar."""
    path = Path(path)
    side = sidecar_path(path)
    atomic_write_text(side, f"{check_hex(sha256, str(side))}  {path.name}\n")
    return side


def verify_file(path: str | Path, *, pinned: str | None = None, fix: str = "") -> str:
    """Hash ``path`` and check it against its sidecar and ``pinned``; return the hash (writes nothing).

    Args:
        path: the weights file.
        pinned: a SHA-256 the file must have (from the catalogue or the user), or None.
        fix: what to run to replace the file, appended to messages (e.g. ``geopeft weights fetch NAME --force``).

    Raises:
        WeightsError: the file is missing, or its hash differs from the sidecar or from ``pinned`` (both hashes and
            the file are named).
    """
    path = Path(path)
    actual = file_sha256(path)
    how = f"; replace it: {fix}" if fix else ""
    if pinned is not None and actual != check_hex(pinned, f"the pinned SHA-256 of {path}"):
        raise WeightsError(f"{path} has SHA-256 {actual}, but {pinned} is pinned for it{how}")
    recorded = read_sidecar(path)
    if recorded is not None and actual != recorded:
        raise WeightsError(
            f"{path} has SHA-256 {actual}, but {sidecar_path(path)} recorded {recorded} when it was first verified: "
            f"the file changed{how} (or delete the sidecar if the new file is meant)"
        )
    return actual
