"""Read speed of the cells' data path against raw h5py and the GeoTIFFs it was built from (512x512x13 int16 chips).

Writes ~32 synthetic Sen1Floods11 chips into a temporary folder, builds the cache once per codec (none = the default,
blosc-lz4, lzf; gzip is left out as slower than lzf), then reads every train sample single-threaded, in batches of
``--batch``, best of a few passes (files are in the OS page cache: this measures decoding, copying and converting,
not the disk or a parallel file system):

- h5py raw:     ``images[i]`` and ``masks[i]`` straight from h5py (decode + Fletcher-32 check), the limit of a reader;
                and once from an uncompressed copy without the checksum, to show what the check costs;
- loader:       ``CacheDataset.read_batch`` as the cells' DataLoader workers call it: the batch in the stored dtype,
                read straight into the batch arrays (no collate copy), without augmentation (validation, test);
- loader + D4:  the same with the train split's D4 flips/rotations, drawn per sample;
- +device prep: the loader batch then scaled, standardised (the study's statistics) on the CPU, as the device does
                it: what a CPU-only cell pays, shown apart because on a GPU it costs the accelerator microseconds;
- rasterio:     both GeoTIFFs with rasterio into a batch in the stored dtype, once as written (uncompressed, pixel
                interleaved) and once for DEFLATE + predictor copies (how many public datasets ship).

Prints samples/s, the ratios loader/raw and loader/rasterio, the cost of each D4 element and the bytes per sample
handed to the device (stored dtype vs the float32 image + int64 mask of a CPU-normalising loader). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import rasterio
import torch
from rasterio.shutil import copy as rio_copy

from geopeft.cache import schema
from geopeft.cache.build import cache_path, prepare
from geopeft.cache.reader import d4_into, open_split
from geopeft.data import sen1floods11 as s1f
from geopeft.data.bands import S2_BANDS
from geopeft.data.normalisation import resolve
from geopeft.data.synthetic import write_sen1floods11
from geopeft.train.preprocess import BatchPreprocess

CODECS = ("none", "blosc-lz4", "lzf")


def rate(read: Callable[[list[int]], object], n: int, batch: int, passes: int) -> float:
    """Samples per second reading samples ``0..n-1`` in batches of ``batch``, best of ``passes``."""
    batches = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for b in batches:
            read(b)
        best = min(best, time.perf_counter() - start)
    return n / best


def d4_costs(shape: tuple[int, int, int], repeats: int = 20) -> list[float]:
    """Milliseconds of each D4 element on one int16 sample (the worker's extra copy), in element order."""
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 10000, shape).astype(np.int16))
    out = torch.empty_like(x)
    costs = []
    for k in range(8):
        start = time.perf_counter()
        for _ in range(repeats):
            d4_into(x, k, out)
        costs.append((time.perf_counter() - start) / repeats * 1000)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=32, help="train chips to write and read")
    parser.add_argument("--size", type=int, default=512, help="chip height and width")
    parser.add_argument("--batch", type=int, default=4, help="samples per batch")
    parser.add_argument("--passes", type=int, default=3, help="timed passes; the best counts")
    parser.add_argument("--codecs", nargs="+", default=list(CODECS), choices=CODECS, help="codecs to build and read")
    args = parser.parse_args()
    codecs = tuple(args.codecs) if "none" in args.codecs else ("none", *args.codecs)  # ratios are against none
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="geopeft-bench-") as tmp:
        root = Path(tmp)
        counts = {"train": args.chips, "val": 1, "test": 1, "bolivia": 1}
        splits = write_sen1floods11(root / "raw", counts=counts, size=args.size)
        for codec in codecs:
            prepare("sen1floods11", root / "raw", root / codec, splits_dir=splits, progress=False, codec=codec)
        plain = {c: open_split(root / c, "sen1floods11", "train", bands=S2_BANDS, train=False) for c in codecs}
        augmented = {c: open_split(root / c, "sen1floods11", "train", bands=S2_BANDS, train=True) for c in codecs}
        ds = plain["none"]
        ids = [ds.metadata(i).id for i in range(len(ds))]
        info = s1f.INFO
        prep = BatchPreprocess(resolve("study", info.name, S2_BANDS, scale=info.scale, study=info.study_stats))

        deflated = root / "deflate"
        deflated.mkdir()
        for sample_id in ids:
            for path in (s1f.image_path(root / "raw", sample_id), s1f.label_path(root / "raw", sample_id)):
                rio_copy(path, deflated / path.name, driver="GTiff", compress="deflate", predictor=2)

        def geotiffs(folder: Path | None) -> Callable[[list[int]], object]:
            def read(batch: list[int]) -> object:
                images, masks = [], []
                for i in batch:
                    image, label = s1f.image_path(root / "raw", ids[i]), s1f.label_path(root / "raw", ids[i])
                    if folder is not None:
                        image, label = folder / image.name, folder / label.name
                    with rasterio.open(image) as src:
                        images.append(src.read())
                    with rasterio.open(label) as src:
                        masks.append(src.read(1))
                return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))

            return read

        n, b, passes = len(ds), args.batch, args.passes
        raw, loader, loader_d4, prepped = {}, {}, {}, {}
        for codec in codecs:
            with schema.open_h5(cache_path(root / codec, "sen1floods11", "train")) as h5:
                images, masks = h5[schema.IMAGES], h5[schema.MASKS]
                raw[codec] = rate(lambda batch, im=images, mk=masks: [(im[i], mk[i]) for i in batch], n, b, passes)
            loader[codec] = rate(plain[codec].read_batch, n, b, passes)
            augmented[codec].set_epoch(0, 1)
            loader_d4[codec] = rate(augmented[codec].read_batch, n, b, passes)
            prepped[codec] = rate(lambda batch, d=plain[codec]: prep(d.read_batch(batch)), n, b, passes)
        unchecked = root / "unchecked.h5"
        with (
            schema.open_h5(cache_path(root / "none", "sen1floods11", "train")) as h5,
            h5py.File(unchecked, "w") as out,
        ):
            for name in (schema.IMAGES, schema.MASKS):
                out.create_dataset(name, data=h5[name][()], chunks=h5[name].chunks)
        with h5py.File(unchecked) as h5:
            images, masks = h5[schema.IMAGES], h5[schema.MASKS]
            no_check = rate(lambda batch, im=images, mk=masks: [(im[i], mk[i]) for i in batch], n, b, passes)
        tif = rate(geotiffs(None), n, b, passes)
        tif_deflate = rate(geotiffs(deflated), n, b, passes)
        costs = d4_costs(ds.shape)
        sample = ds.read_batch([0])
        stored_bytes = sample["image"].nbytes + sample["mask"].nbytes
        float_bytes = sample["image"].numel() * 4 + sample["mask"].numel() * 8
    print(f"{n} train chips of {args.size}x{args.size}x13 int16, batches of {b}, one thread")
    print(f"rasterio, uncompressed GeoTIFF: {tif:7.1f} samples/s;  DEFLATE GeoTIFF: {tif_deflate:7.1f} samples/s")
    print(
        "codec      raw_h5py/s  loader/s  loader/raw  loader/rasterio  loader+D4/s  (D4)/raw  "
        "(D4)/rasterio  +device_prep/s"
    )
    for c in codecs:
        print(
            f"{c:10s} {raw[c]:10.1f} {loader[c]:9.1f} {loader[c] / raw[c]:11.2f} {loader[c] / tif:16.2f} "
            f"{loader_d4[c]:12.1f} {loader_d4[c] / raw[c]:9.2f} {loader_d4[c] / tif:14.2f} {prepped[c]:15.1f}"
        )
    print(
        f"h5py raw without the Fletcher-32 check (uncompressed copy): {no_check:.1f} samples/s, "
        f"{no_check / tif:.2f}x rasterio; the check is {100 * (1 - raw['none'] / no_check):.0f} % of a raw read"
    )
    print("D4 element cost, ms per sample (0 = identity): " + ", ".join(f"{k}: {t:.2f}" for k, t in enumerate(costs)))
    print(
        f"bytes per sample to the device: {stored_bytes / 2**20:.2f} MiB in the stored dtype vs "
        f"{float_bytes / 2**20:.2f} MiB as float32 image + int64 mask ({stored_bytes / float_bytes:.2f}x)"
    )


if __name__ == "__main__":
    main()
