#!/usr/bin/env python3
"""Write a tiny synthetic GEO-Bench m-cashew-plantation in the native layout next to this script.

Output (not committed): ``m-cashew-plant/sample_<n>.hdf5`` (13 float32 bands keyed ``"02 - Blue_<date>"`` etc. plus
an int64 ``label``), ``m-cashew-plant/default_partition.json`` and the exported split files under
``splits/m_cashew_plantation/``. Run it from the repository root with ``.venv/bin/python``; it prints the md5 of
every file it wrote.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from geopeft.data.synthetic.geobench import write_m_cashew_plantation

HERE = Path(__file__).resolve().parent
COUNTS = {"train": 2, "val": 1, "test": 1}
SIZE = 32
SEED = 0


def main() -> None:
    for old in ("m-cashew-plant", "splits"):
        shutil.rmtree(HERE / old, ignore_errors=True)
    write_m_cashew_plantation(HERE, counts=COUNTS, size=SIZE, seed=SEED)
    for path in sorted(p for p in HERE.rglob("*") if p.is_file() and p.name != "data.py"):
        print(hashlib.md5(path.read_bytes()).hexdigest(), path.relative_to(HERE))


if __name__ == "__main__":
    main()
