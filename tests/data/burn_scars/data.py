#!/usr/bin/env python3
"""Write a tiny HLS Burn Scars copy in the native flat layout next to this script and print the md5 of its files.

The files come from geopeft's synthetic writer (the real file names of the first official split ids, 6-band float32
reflectance GeoTIFFs in their UTM zone at 30 m, masks with 0 / 1 / -1), so the reader and the cache builder run
their real code paths on them. Run it from the repository root with the project's environment::

    .venv/bin/python tests/data/burn_scars/data.py
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from geopeft.data.synthetic.burn_scars import write_burn_scars

ROOT = Path(__file__).resolve().parent
COUNTS = {"train": 2, "val": 1, "test": 1}
SIZE = 32
SEED = 0


def main() -> None:
    """Replace the previous output with a fresh copy and print one md5 line per written file."""
    for old in ROOT.glob("*.tif"):
        old.unlink()
    shutil.rmtree(ROOT / "splits", ignore_errors=True)
    write_burn_scars(ROOT, counts=COUNTS, size=SIZE, seed=SEED)
    for path in sorted([*ROOT.glob("*.tif"), *(ROOT / "splits").glob("*.txt")]):
        print(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
