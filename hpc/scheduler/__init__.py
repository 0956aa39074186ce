"""The scheduler layer: cluster profiles, the SLURM client commands, local locks and how cells become arrays.

Imports nothing else of ``hpc``; every other layer may import it.
"""
