#!/usr/bin/env python3
"""Write a tiny reBEN 7k copy in the BigEarthNet v2.0 layout next to this script and print the md5 of its files.

The files come from geopeft's synthetic writer: for the first id of each official split file, the 12 single-band
uint16 L2A GeoTIFFs at 10 / 20 / 60 m in the UTM zone of the patch's tile and the uint16 reference map of CORINE
Land Cover codes, plus the trimmed split files, so the reader and the cache builder run their real code paths on
them. Patches are always 120x120 pixels, as in BigEarthNet. Run it from the repository root with the project's
environment::

    .venv/bin/python tests/data/reben_7k/data.py
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from geopeft.data.reben import MAPS_DIR, S2_DIR, SPLIT_FILES
from geopeft.data.synthetic.reben import write_reben_7k

ROOT = Path(__file__).resolve().parent
COUNTS = dict.fromkeys(SPLIT_FILES, 1)
SEED = 0


def main() -> None:
    """Replace the previous output with a fresh copy and print one md5 line per written file."""
    for folder in (S2_DIR, MAPS_DIR, "splits"):
        shutil.rmtree(ROOT / folder, ignore_errors=True)
    write_reben_7k(ROOT, counts=COUNTS, seed=SEED)
    files = [*(ROOT / S2_DIR).rglob("*.tif"), *(ROOT / MAPS_DIR).rglob("*.tif"), *(ROOT / "splits").glob("*.txt")]
    for path in sorted(files):
        print(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
