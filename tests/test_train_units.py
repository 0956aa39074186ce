"""The engine's parts: rank discovery, batch layout, samplers, D4 keyed by (seed, epoch, index), fault hooks."""

import os
import signal
import stat

import pytest
import torch

from geopeft.cache.build import prepare
from geopeft.cache.reader import open_split
from geopeft.data.synthetic import write_sen1floods11
from geopeft.errors import CellFailed, ConfigError
from geopeft.train import faults
from geopeft.train.distributed import DistEnv, first_host, port_for
from geopeft.train.sampling import BatchLayout, ShardSampler, TrainSampler
from geopeft.train.strategy import LocalBatchNorm, unsync_batch_norm


def test_ranks_from_torchrun_variables_win_over_slurm():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1234"}
    d = DistEnv.from_env("abc", {**env, "SLURM_PROCID": "0", "SLURM_NTASKS": "4"})
    assert (d.rank, d.world_size, d.local_rank, d.master_addr, d.master_port, d.launcher) == (
        1, 2, 1, "h", 1234, "torchrun",
    )  # fmt: skip


def test_ranks_from_slurm_with_the_port_of_the_cell():
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[007-009,012]"}
    d = DistEnv.from_env("cellA", env)
    assert (d.rank, d.world_size, d.local_rank, d.master_addr, d.launcher) == (3, 4, 1, "gpu007", "slurm")
    assert d.master_port == port_for("cellA") != port_for("cellB")
    assert 20000 <= d.master_port < 50000
    assert DistEnv.from_env("cellA", {}).world_size == 1


def test_node_lists_and_inconsistent_ranks():
    assert first_host("node1,node2") == "node1"
    assert first_host("a-b[01-04]") == "a-b01"
    with pytest.raises(ConfigError, match="inconsistent"):
        DistEnv.from_env("c", {"SLURM_PROCID": "2", "SLURM_NTASKS": "2"})
    with pytest.raises(ConfigError, match="RANK"):
        DistEnv.from_env("c", {"RANK": "x", "WORLD_SIZE": "2"})


def test_layout_halving_keeps_the_effective_batch():
    full = BatchLayout.full(8, 2)
    assert (full.per_rank, full.micro_batch, full.accumulation) == (4, 4, 1)
    half = full.halved()
    assert (half.micro_batch, half.accumulation, half.batch_size) == (2, 2, 8)
    with pytest.raises(CellFailed) as err:
        half.halved().halved()
    assert err.value.reason == "oom"
    with pytest.raises(ConfigError, match="divisible"):
        BatchLayout.full(6, 4)


def test_train_order_is_a_function_of_seed_and_epoch_and_resumes_at_a_step():
    layout = BatchLayout(6, 2, 3)
    shares = []
    for rank in (0, 1):
        s = TrainSampler(20, layout, rank, seed=3)
        s.set_epoch(2)
        shares.append(list(s))
    assert len(shares[0]) == len(shares[1]) == 9  # 3 whole global batches of 6, the rest dropped
    assert not set(shares[0]) & set(shares[1])
    one = TrainSampler(20, BatchLayout(6, 1, 6), 0, seed=3)
    one.set_epoch(2)
    full = list(one)  # rank 0's then rank 1's share of each global batch = the one-rank order
    assert full == [i for b in range(3) for r in (0, 1) for i in shares[r][3 * b : 3 * b + 3]]
    one.set_epoch(2, start_step=1)
    assert list(one) == full[6:] and len(one) == 12
    one.set_epoch(3)
    assert list(one) != full


def test_shards_cover_every_sample_once():
    parts = [list(ShardSampler(7, r, 3)) for r in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(7))
    assert [len(ShardSampler(7, r, 3)) for r in range(3)] == [3, 2, 2]


def test_d4_is_keyed_by_seed_epoch_and_index(tmp_path):
    splits = write_sen1floods11(tmp_path / "raw", counts={"train": 4, "val": 1, "test": 1, "bolivia": 1}, size=16)
    prepare("sen1floods11", tmp_path / "raw", tmp_path / "cache", splits_dir=splits, progress=False)
    ds = open_split(tmp_path / "cache", "sen1floods11", "train", bands=("BLUE", "GREEN"), train=True)
    ds.set_epoch(seed=1, epoch=5)
    torch.manual_seed(0)
    first = [ds[i]["image"] for i in range(4)]
    torch.manual_seed(123)  # the global RNG plays no part
    assert all(torch.equal(a, ds[i]["image"]) for i, a in enumerate(first))
    draws = set()
    for seed, epoch in ((1, 5), (1, 6), (2, 5), (2, 6)):
        ds.set_epoch(seed, epoch)
        draws.add(tuple(ds.d4_element(i) for i in range(64)))
    assert len(draws) == 4


def test_preemption_owns_sigusr2_only_inside_and_sets_a_flag():
    seen = []
    previous = signal.signal(signal.SIGUSR2, lambda *_: seen.append(1))
    try:
        with faults.Preemption() as p:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert p.requested and not seen
        os.kill(os.getpid(), signal.SIGUSR2)
        assert seen == [1]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_signal_deferred_before_training_reaches_the_first_preemption():
    previous = signal.getsignal(signal.SIGUSR2)
    try:
        faults.defer_preemption()
        os.kill(os.getpid(), signal.SIGUSR2)  # would terminate the process without the deferring handler
        with faults.Preemption() as first:
            assert first.requested
        with faults.Preemption() as second:  # taken once
            assert not second.requested
        assert signal.getsignal(signal.SIGUSR2) is faults._remember  # deferring again after training
    finally:
        signal.signal(signal.SIGUSR2, previous)
        faults._pending.clear()


def test_requeue_addresses_the_array_task(tmp_path, monkeypatch):
    log = tmp_path / "calls"
    fake = tmp_path / "bin" / "scontrol"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert faults.requeue({}) is None
    env = {"SLURM_JOB_ID": "77", "SLURM_ARRAY_JOB_ID": "70", "SLURM_ARRAY_TASK_ID": "7"}
    assert faults.requeue(env) == "70_7"
    assert faults.requeue({"SLURM_JOB_ID": "77"}) == "77"
    assert log.read_text().splitlines() == ["requeue 70_7", "requeue 77"]
    fake.write_text("#!/bin/sh\necho no >&2\nexit 1\n")
    with pytest.raises(CellFailed, match="--requeue"):
        faults.requeue(env)


def test_fault_hooks(monkeypatch):
    with pytest.raises(ConfigError, match="SIGNAL@EPOCH:STEP"):
        faults.inject_fault(1, 0, is_main=True, env={faults.FAULT_AT: "USR2"})
    faults.inject_oom(8, env={})
    with pytest.raises(torch.OutOfMemoryError, match="injected"):
        faults.inject_oom(8, env={faults.OOM_ABOVE: "4"})
    faults.inject_oom(4, env={faults.OOM_ABOVE: "4"})


def test_sync_batch_norm_becomes_per_rank_batch_norm_with_the_same_state():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.SyncBatchNorm(4), torch.nn.ReLU())
    model[1].running_mean.fill_(0.5)
    keys = set(model.state_dict())
    assert unsync_batch_norm(model) == 1 and isinstance(model[1], LocalBatchNorm)
    assert set(model.state_dict()) == keys and torch.all(model[1].running_mean == 0.5)
    x = torch.randn(2, 3, 5, 5)
    reference = torch.nn.functional.batch_norm(model[0](x), None, None, training=True)
    assert torch.allclose(model[1](model[0](x)), reference, atol=1e-6)
    assert model[1](torch.randn(4, 4, 7)).shape == (4, 4, 7)  # 3-D input, as SyncBatchNorm takes
