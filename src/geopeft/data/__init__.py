"""Datasets: band names, dataset facts and native readers, per-sample transforms, synthetic data.

Nothing here imports torch or the cache; the cache builder (:mod:`geopeft.cache.build`) reads raw files through
the sources registered in :mod:`geopeft.data.registry`.
"""
