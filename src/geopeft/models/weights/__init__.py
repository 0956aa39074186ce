"""Pretrained weights: the catalogue, reading local files, their sidecars, and the official key formats' loaders.

``pretrained`` is the catalogue a spec's ``model.weights`` names; ``files`` reads local files without running their
code; ``integrity`` keeps their SHA-256 sidecars; ``prithvi`` and ``vit`` map the official key formats onto
geopeft's backbones (Clay's and DeCUR's loaders sit beside their models).
"""
