"""The HDF5 cache: layout (:mod:`.schema`), builder (:mod:`.build`, no torch) and torch reader (:mod:`.reader`).

Import the submodules directly; this package imports nothing so that ``geopeft.cache.build`` stays torch-free.
"""
