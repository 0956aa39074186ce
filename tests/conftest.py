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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault-injection suite's tally (tests/fault_suite.py), when any of its tests ran."""
    suite = sys.modules.get("fault_suite")
    if suite is None or not suite.TALLY.faults:
        return
    terminalreporter.section("fault injection")
    for line in suite.TALLY.lines():
        terminalreporter.write_line(line)
