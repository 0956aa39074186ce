import json
import os
import socket
import subprocess
import sys
import time

from results import write_result

from geopeft.attempts import end_attempt, process_start_ticks, start_attempt
from geopeft.io import append_jsonl, atomic_write_json
from geopeft.paths import SweepPaths
from hpc.state.cells import CellSubmission, State, cell_state, latest_submissions


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
    write_result(paths)
    st = cell_state(paths)
    assert st.state is State.DONE and st.attempts == 1


def test_an_empty_truncated_or_invalid_result_is_failed_naming_the_file(tmp_path):
    paths = SweepPaths(tmp_path).cell("abc")
    n = start_attempt(paths)
    end_attempt(paths, n, "success")
    text = write_result(paths).to_dict()
    for content, says in [
        ("", "not valid JSON"),
        (json.dumps(text)[:200], "not valid JSON"),
        ("[1, 2]", "not a result object"),
        (json.dumps({**text, "schema_version": 1}), "schema_version 1"),
        (json.dumps({**text, "regions": {"test": {**text["regions"]["test"], "miou": "0.7"}}}), "regions.test.miou"),
        (json.dumps({**text, "train": {**text["train"], "data_wait_fraction": True}}), "train.data_wait_fraction"),
        (json.dumps({**text, "train": {k: v for k, v in text["train"].items() if k != "epochs_run"}}), "epochs_run"),
    ]:
        paths.result.write_text(content)
        st = cell_state(paths)
        assert (st.state, st.reason) == (State.FAILED, "invalid result"), content
        assert str(paths.result) in st.detail and says in st.detail, st.detail


def test_running_shows_best_miou_and_a_bound_on_the_time_left(tmp_path):
    paths = SweepPaths(tmp_path).cell("abc")
    start_attempt(paths)
    progress = {"epoch": 3, "max_epochs": 10, "time": time.time(), "best_val_miou": 0.6123, "epoch_s": 30.0}
    atomic_write_json(paths.progress, progress)
    assert cell_state(paths).detail.endswith(", epoch 3/10, best val mIoU 61.2, 30.0 s/epoch, at most 3.5 min left")


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
    me = CellSubmission(
        time.time() + 1, "local", str(os.getpid()), socket.gethostname(), process_start_ticks(os.getpid())
    )
    assert cell_state(paths, me).state is State.PENDING
    gone = CellSubmission(time.time() + 1, "local", str(dead_pid()), socket.gethostname(), None)
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


def slurm_sub(queued, squeue_state="", when=None, prepare_failed=""):
    t = time.time() - 60 if when is None else when
    return CellSubmission(t, "slurm", "42_0", "login", None, queued, squeue_state, prepare_failed)


def test_a_requeued_task_whose_process_is_gone_is_pending_while_squeue_lists_it(tmp_path):
    """``scontrol requeue`` of a running task: its process dies without an end line, SLURM queues it again."""
    paths = SweepPaths(tmp_path).cell("abc")
    sub = slurm_sub(True, "PENDING")
    append_jsonl(
        paths.attempts,
        {"event": "start", "attempt": 1, "time": time.time(), "host": socket.gethostname(), "pid": dead_pid()},
    )
    for state in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "RUNNING"):  # RUNNING: the new process not started yet
        st = cell_state(paths, slurm_sub(True, state))
        assert st.state is State.PENDING and "requeued as job 42_0" in st.detail, state
    assert (cell_state(paths, slurm_sub(False)).state, cell_state(paths, slurm_sub(False)).reason) == (
        State.FAILED,
        "lost",
    )
    # the same on another host, whose process cannot be checked: squeue's state decides
    other = SweepPaths(tmp_path).cell("def")
    append_jsonl(
        other.attempts, {"event": "start", "attempt": 1, "time": time.time(), "host": "node-elsewhere", "pid": 1}
    )
    assert cell_state(other, slurm_sub(True, "RUNNING")).state is State.RUNNING
    assert cell_state(other, slurm_sub(True, "REQUEUED")).state is State.PENDING
    assert cell_state(other, sub).state is State.PENDING
    assert cell_state(other, slurm_sub(False)).state is State.FAILED
    assert cell_state(other, slurm_sub(None)).state is State.RUNNING  # squeue did not answer: from the files


def test_cells_of_a_failed_prepare_job_are_failed_prepare_with_its_log(tmp_path, monkeypatch):
    import hpc.state.cells

    sweep = SweepPaths(tmp_path)
    now = time.time()
    append_jsonl(sweep.submissions, {"time": now, "executor": "slurm", "host": "login", "jobs": {},
                                     "prepare": {"job_id": "41"}})  # fmt: skip
    append_jsonl(sweep.submissions, {"time": now, "executor": "slurm", "host": "login",
                                     "jobs": {"abc": {"job_id": "42_0"}},
                                     "array": {"job_id": "42", "dependency": "afterok:41"}})  # fmt: skip
    answers: dict[str, str] = {"41": "RUNNING", "42_0": "PENDING"}
    monkeypatch.setattr(hpc.state.cells, "job_states", lambda ids: {k: v for k, v in answers.items() if k in ids})
    paths = sweep.cell("abc")
    assert cell_state(paths, latest_submissions(sweep)["abc"]).state is State.PENDING
    answers.clear()  # the prepare job failed; --kill-on-invalid-dep cancelled the array
    st = cell_state(paths, latest_submissions(sweep)["abc"])
    assert (st.state, st.reason) == (State.FAILED, "prepare") and str(sweep.prepare_log("41")) in st.detail
    sweep.slurm_logs.mkdir(parents=True)
    sweep.prepare_ok("41").touch()  # it succeeded, and the array was cancelled while pending
    st = cell_state(paths, latest_submissions(sweep)["abc"])
    assert (st.state, st.reason) == (State.FAILED, "lost") and "left the queue" in st.detail
