"""Read speed of the HDF5 cache against the GeoTIFFs it was built from, for 512x512x13 Sen1Floods11 chips.

Writes ~32 synthetic chips into a temporary folder, builds the cache once per codec (none = the default, blosc-lz4,
lzf; gzip is left out as slower than lzf), then reads every train sample single-threaded, best of a few passes (files
are in the OS page cache: this measures decoding and conversion, not the disk or a parallel file system):

- cache:    ``CacheDataset[i]`` (decode + Fletcher-32 check, scale, standardise, tensors), no augmentation, per codec;
- rasterio: both GeoTIFFs with rasterio, then the same scaling, standardisation and tensors; once for the GeoTIFFs as
  written (uncompressed, pixel-interleaved, as the synthetic writer makes them) and once for DEFLATE + predictor copies
  (how many public datasets ship; rasterio then pays the decompression);
- h5py raw: ``images[i]`` and ``masks[i]`` straight from h5py (decode + checksum only), per codec: the limit of any
  cache reader.

Prints file sizes, samples/s and the ratios cache/rasterio (both kinds of GeoTIFF), cache/raw (same codec) and each
codec against ``none``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.shutil import copy as rio_copy

from geopeft.cache import schema
from geopeft.cache.build import cache_path, prepare
from geopeft.cache.reader import open_split
from geopeft.data import sen1floods11 as s1f
from geopeft.data.bands import S2_BANDS
from geopeft.data.synthetic import write_sen1floods11
from geopeft.data.transforms import normalise


def rate(read: Callable[[int], object], n: int, passes: int) -> float:
    """Samples per second over ``n`` samples, best of ``passes``."""
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for i in range(n):
            read(i)
        best = min(best, time.perf_counter() - start)
    return n / best


CODECS = ("none", "blosc-lz4", "lzf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=32, help="train chips to write and read")
    parser.add_argument("--size", type=int, default=512, help="chip height and width")
    parser.add_argument("--passes", type=int, default=3, help="timed passes; the best counts")
    parser.add_argument("--codecs", nargs="+", default=list(CODECS), choices=CODECS, help="codecs to build and read")
    args = parser.parse_args()
    codecs = tuple(args.codecs) if "none" in args.codecs else ("none", *args.codecs)  # ratios are against none
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="geopeft-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        counts = {"train": args.chips, "val": 1, "test": 1, "bolivia": 1}
        splits = write_sen1floods11(root / "raw", counts=counts, size=args.size)
        written = time.perf_counter() - start
        build_s = {}
        for codec in codecs:
            start = time.perf_counter()
            prepare("sen1floods11", root / "raw", root / codec, splits_dir=splits, progress=False, codec=codec)
            build_s[codec] = time.perf_counter() - start
        datasets = {c: open_split(root / c, "sen1floods11", "train", bands=S2_BANDS, train=False) for c in codecs}
        ds = datasets["none"]
        ids = [ds.metadata(i).id for i in range(len(ds))]
        mean, std, scale = ds.header.mean, ds.header.std, ds.header.scale

        deflated = root / "deflate"
        deflated.mkdir()
        for sample_id in ids:
            for path in (s1f.image_path(root / "raw", sample_id), s1f.label_path(root / "raw", sample_id)):
                rio_copy(path, deflated / path.name, driver="GTiff", compress="deflate", predictor=2)

        def geotiff(image_path: Path, label_path: Path) -> dict[str, object]:
            with rasterio.open(image_path) as src:
                image = src.read()
            with rasterio.open(label_path) as src:
                mask = src.read(1)
            return {
                "image": torch.from_numpy(normalise(image, mean, std, scale=scale)),
                "mask": torch.from_numpy(mask.astype(np.int64)),
            }

        def plain_tif(i: int) -> object:
            return geotiff(s1f.image_path(root / "raw", ids[i]), s1f.label_path(root / "raw", ids[i]))

        def deflate_tif(i: int) -> object:
            image, label = s1f.image_path(root / "raw", ids[i]), s1f.label_path(root / "raw", ids[i])
            return geotiff(deflated / image.name, deflated / label.name)

        n = len(ds)
        cache, raw = {}, {}
        for codec in codecs:
            cache[codec] = rate(datasets[codec].__getitem__, n, args.passes)
            with schema.open_h5(cache_path(root / codec, "sen1floods11", "train")) as h5:
                images, masks = h5[schema.IMAGES], h5[schema.MASKS]
                raw[codec] = rate(lambda i, im=images, mk=masks: (im[i], mk[i]), n, args.passes)
        tif = rate(plain_tif, n, args.passes)
        tif_deflate = rate(deflate_tif, n, args.passes)
        sizes = {c: cache_path(root / c, "sen1floods11", "train").stat().st_size / 2**20 for c in codecs}
        tif_mb = sum(s1f.image_path(root / "raw", i).stat().st_size for i in ids) / 2**20
        deflate_mb = sum((deflated / s1f.image_path(root / "raw", i).name).stat().st_size for i in ids) / 2**20
    print(f"{n} train chips of {args.size}x{args.size}x13 int16; wrote GeoTIFFs in {written:.1f} s")
    print(f"rasterio, uncompressed GeoTIFF ({tif_mb:.0f} MiB) + same conversion: {tif:8.1f} samples/s")
    print(f"rasterio, DEFLATE GeoTIFF      ({deflate_mb:.0f} MiB) + same conversion: {tif_deflate:8.1f} samples/s")
    print(
        "codec      prepare_s  train_MiB  size/none  cache/s  raw_h5py/s  cache/rasterio  cache/rasterio_deflate"
        "  cache/raw  cache/none"
    )
    for c in codecs:
        print(
            f"{c:10s} {build_s[c]:9.1f} {sizes[c]:10.0f} {sizes[c] / sizes['none']:10.2f} {cache[c]:8.1f} "
            f"{raw[c]:11.1f} {cache[c] / tif:15.2f} {cache[c] / tif_deflate:23.2f} {cache[c] / raw[c]:10.2f} "
            f"{cache[c] / cache['none']:11.2f}"
        )


if __name__ == "__main__":
    main()
