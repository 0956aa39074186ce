import json
import os

import pytest

from geopeft.errors import GeopeftError
from geopeft.io import append_jsonl, atomic_write_json, read_json, read_jsonl, temporary_save_path


def test_atomic_write_json_round_trip(tmp_path):
    target = tmp_path / "sub" / "result.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert read_json(target) == {"a": [1, 2], "b": 1}
    assert os.listdir(target.parent) == ["result.json"]


def test_exception_during_write_leaves_no_file(tmp_path):
    target = tmp_path / "result.json"
    with pytest.raises(RuntimeError), temporary_save_path(target) as tmp:
        tmp.write_text('{"half": ')
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_exception_keeps_previous_version(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"v": float("nan")})  # NaN is not JSON: refused before the rename
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{")
    with pytest.raises(GeopeftError, match=str(bad)):
        read_json(bad)


def test_jsonl_skips_only_a_torn_last_line(tmp_path):
    log = tmp_path / "attempts.jsonl"
    append_jsonl(log, {"a": 1})
    append_jsonl(log, {"a": 2})
    with open(log, "a") as fh:
        fh.write('{"a": 3')  # a writer killed mid-line
    assert read_jsonl(log) == [{"a": 1}, {"a": 2}]
    log.write_text('{"a": 1\n' + json.dumps({"a": 2}) + "\n")
    with pytest.raises(GeopeftError, match=r"attempts\.jsonl:1"):
        read_jsonl(log)
