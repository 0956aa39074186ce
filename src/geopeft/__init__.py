"""geopeft: parameter-efficient fine-tuning studies of geospatial foundation models on SLURM clusters.

Importing the package is cheap: nothing heavy (torch, peft, h5py) is imported here.
"""

__version__ = "0.1.0"
