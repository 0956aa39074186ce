"""The state layer: what a sweep's files say — its manifest, its submissions and the state of each cell.

Imports only the scheduler layer (for one squeue call); ``geopeft status`` needs nothing above it.
"""
