"""``python -m hpc ...``: the ``geopeft`` command line, for job scripts that name an interpreter."""

from hpc.cli import main

main()
