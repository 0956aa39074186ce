"""Names and paths that SLURM scripts carry as they are: refused at plan time, never broken in a script."""

from __future__ import annotations

import re

from geopeft.errors import ConfigError

#: A sweep name: it becomes file names and SLURM job names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: A path that stands unquoted in ``#SBATCH`` lines and job scripts: no white space, quotes, ``%`` (SLURM's
#: file-name patterns), ``$`` or other shell syntax, and ASCII only.
_SCRIPT_PATH = re.compile(r"[A-Za-z0-9._/+:@=,~-]+")


def check_name(value: str, where: str) -> None:
    """Refuse a sweep name that cannot be a file and job name (spaces, non-ASCII, shell characters)."""
    if not _NAME.fullmatch(value):
        raise ConfigError(
            f"{where}: {value!r} cannot name files and SLURM jobs; use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )


def check_script_path(value: str, where: str) -> None:
    """Refuse a path that the sbatch scripts could not carry as it is: it is refused here, not broken there."""
    bad = sorted({c for c in value if not _SCRIPT_PATH.fullmatch(c)})
    if bad:
        raise ConfigError(
            f"{where}: {value!r} has {', '.join(repr(c) for c in bad)}, which SLURM scripts cannot carry "
            "(#SBATCH lines are not shell-quoted, '%' is a file-name pattern); choose a path of ASCII letters, "
            "digits and ._/-+:@=,~"
        )
