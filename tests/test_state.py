import os
import socket
import subprocess
import sys
import time

from geopeft.attempts import end_attempt, process_start_ticks, start_attempt
from geopeft.io import append_jsonl, atomic_write_json
from geopeft.paths import SweepPaths
from hpc.state import State, Submitted, cell_state, latest_submissions


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_missing_when_nothing_happened(tmp_path):
    assert cell_state(SweepPaths(tmp_path).cell("abc")).state is State.MISSING


def test_done_wins(tmp_path):
    paths = SweepPaths(tmp_path).cell("abc")
    n = start_attempt(paths)
    end_attempt(paths, n, "success")
    atomic_write_json(paths.result, {"status": "success"})
    st = cell_state(paths)
    assert st.state is State.DONE and st.attempts == 1


def test_running_while_the_process_lives(tmp_path):
    paths = SweepPaths(tmp_path).cell("abc")
    start_attempt(paths)  # this very process
    atomic_write_json(paths.progress, {"epoch": 2, "max_epochs": 5, "time": time.time()})
    st = cell_state(paths)
    assert st.state is State.RUNNING and "epoch 2/5" in st.detail


def test_killed_process_is_failed_lost(tmp_path):
    paths = SweepPaths(tmp_path).cell("abc")
    append_jsonl(
        paths.attempts,
        {"event": "start", "attempt": 1, "time": time.time(), "host": socket.gethostname(), "pid": dead_pid()},
    )
    st = cell_state(paths)
    assert st.state is State.FAILED and st.reason == "lost"


def test_failed_with_reason_and_last_error_line(tmp_path):
    paths = SweepPaths(tmp_path).cell("abc")
    n = start_attempt(paths)
    atomic_write_json(paths.failed, {"error": "CellFailed: loss is nan at epoch 3"})
    end_attempt(paths, n, "failed", "nan")
    st = cell_state(paths)
    assert (st.state, st.reason, st.detail) == (State.FAILED, "nan", "CellFailed: loss is nan at epoch 3")


def test_pending_after_resubmission_then_missing_when_job_died(tmp_path):
    paths = SweepPaths(tmp_path).cell("abc")
    n = start_attempt(paths)
    end_attempt(paths, n, "failed", "error")
    me = Submitted(time.time() + 1, "local", str(os.getpid()), socket.gethostname(), process_start_ticks(os.getpid()))
    assert cell_state(paths, me).state is State.PENDING
    gone = Submitted(time.time() + 1, "local", str(dead_pid()), socket.gethostname(), None)
    assert cell_state(paths, gone).state is State.FAILED  # back to its last real outcome
    fresh = SweepPaths(tmp_path).cell("def")
    st = cell_state(fresh, gone)
    assert st.state is State.MISSING and "ended before the cell started" in st.detail


def test_reused_pid_is_not_mistaken_for_the_cell(tmp_path):
    paths = SweepPaths(tmp_path).cell("abc")
    append_jsonl(
        paths.attempts,
        {
            "event": "start",
            "attempt": 1,
            "time": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": -5,
        },
    )
    assert cell_state(paths).state is State.FAILED


def test_latest_submission_per_cell(tmp_path):
    sp = SweepPaths(tmp_path)
    for t, job in ((1.0, "11"), (2.0, "12")):
        append_jsonl(sp.submissions, {"time": t, "executor": "local", "host": "h", "jobs": {"abc": {"job_id": job}}})
    assert latest_submissions(sp)["abc"].job_id == "12"
