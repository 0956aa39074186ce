"""Atomic file writes and schema-checked reads.

Nothing geopeft writes for later reading (results, manifests, checkpoints, caches) is ever visible half
written: it goes to a temporary name in the same directory, is flushed and fsynced, then renamed over
the final name (``os.replace`` is atomic on POSIX within one file system), as submitit's
``temporary_save_path`` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from geopeft.errors import GeopeftError

#: Version of result.json, failed.json and the manifest. 2: mIoU over the classes present (``None`` IoU of an absent
#: class, ``classes_present``) and ``data_wait_fraction``.
SCHEMA_VERSION = 2


@contextlib.contextmanager
def temporary_save_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success rename it over ``path``, on error delete it."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if not tmp.exists():
            raise GeopeftError(f"{final}: nothing was written to the temporary file {tmp.name}")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (fsynced before the rename)."""
    with temporary_save_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Serialise ``obj`` as indented JSON and write it atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, naming the file in the error when it is malformed."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GeopeftError(f"{p}: not valid JSON ({exc}); delete it to have it written again") from exc


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line; a single ``write`` of a short line with O_APPEND is atomic on POSIX."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True) + "\n"
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def write_jsonl(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> None:
    """Replace a JSONL file with ``records``, atomically (fsynced, then renamed over it)."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSONL file; a torn last line (a writer killed mid-write) is skipped, others must parse."""
    p = Path(path)
    if not p.exists():
        return []
    lines = p.read_text(encoding="utf-8").splitlines()
    out: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                break
            raise GeopeftError(f"{p}:{i + 1}: malformed line ({exc})") from exc
    return out
