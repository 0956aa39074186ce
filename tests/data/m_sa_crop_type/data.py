#!/usr/bin/env python3
"""Write a tiny synthetic GEO-Bench m-SA-crop-type in the native layout next to this script.

Output (not committed): ``m-SA-crop-type/<label tile>_<step>.hdf5`` (13 int16 bands keyed ``"02 - Blue"`` etc. plus
an int16 ``label``), ``m-SA-crop-type/default_partition.json`` and the exported split files under
``splits/m_sa_crop_type/``. Run it from the repository root with ``.venv/bin/python``; it prints the md5 of
every file it wrote.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from geopeft.data.synthetic.geobench import write_m_sa_crop_type

HERE = Path(__file__).resolve().parent
COUNTS = {"train": 2, "val": 1, "test": 1}
SIZE = 32
SEED = 0


def main() -> None:
    for old in ("m-SA-crop-type", "splits"):
        shutil.rmtree(HERE / old, ignore_errors=True)
    write_m_sa_crop_type(HERE, counts=COUNTS, size=SIZE, seed=SEED)
    for path in sorted(p for p in HERE.rglob("*") if p.is_file() and p.name != "data.py"):
        print(hashlib.md5(path.read_bytes()).hexdigest(), path.relative_to(HERE))


if __name__ == "__main__":
    main()
