"""What must exist before cells start: the HDF5 caches a sweep needs (and how to build them) and the weights files.

Imports the plan layer and below.
"""
