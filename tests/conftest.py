"""Fixtures shared by several test modules."""

import subprocess
import sys
from pathlib import Path

import pytest

#: The script that installs and starts the single-node SLURM cluster the ``slurm`` tests submit to.
SLURM_CLUSTER = Path(__file__).resolve().parents[1] / "scripts" / "slurm-test-cluster.sh"


@pytest.fixture(scope="session")
def cluster() -> str:
    """Bring the test cluster up (idempotent); fail loudly, never skip, when it cannot start."""
    proc = subprocess.run([str(SLURM_CLUSTER), "up"], capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{SLURM_CLUSTER} up failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


#: Where the SLURM clients read the 2-node cluster's configuration (``SLURM_CONF``); the default file stays the
#: single-node cluster's.
TWO_NODE_CONF = "/etc/slurm-2n/slurm.conf"


@pytest.fixture(scope="session")
def two_nodes() -> str:
    """Bring the 2-node test cluster up beside the single-node one (idempotent); fail loudly, never skip.

    Returns its ``SLURM_CONF``. Set that for as long as a test or module submits to it (``monkeypatch.setenv``):
    :func:`hpc.scheduler.slurm.clean_env` passes it to sbatch, squeue and scontrol, and sbatch into the jobs. It is
    not set
    here, for the whole session: the single-node tests would then submit to the wrong cluster.
    """
    argv = [str(SLURM_CLUSTER), "up", "--nodes", "2"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return TWO_NODE_CONF


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault-injection suite's tally (tests/fault_suite.py), when any of its tests ran."""
    suite = sys.modules.get("fault_suite")
    if suite is None or not suite.TALLY.faults:
        return
    terminalreporter.section("fault injection")
    for line in suite.TALLY.lines():
        terminalreporter.write_line(line)
