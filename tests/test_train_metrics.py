"""mIoU as TerraTorch reports it: hand-computed cases, torchmetrics' own numbers, and two real ranks (gloo)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassJaccardIndex

from geopeft.result import RegionMetrics
from geopeft.train.metrics import SplitMetrics, iou_from_counts

K = 5  # classes of the random cases: 2 only predicted, 3 only in the targets, 4 absent from both


def logits_for(preds: list[list[int]] | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits ``[B, K, H, W]`` whose argmax is ``preds`` (``[B, H, W]``)."""
    preds = torch.as_tensor(preds)
    if preds.ndim == 2:  # one row of pixels per sample
        preds = preds[:, None, :]
    return F.one_hot(preds, num_classes).permute(0, 3, 1, 2).float()


def masks(labels: list[list[int]]) -> torch.Tensor:
    return torch.tensor(labels)[:, None, :]


def metrics_of(batches: list[tuple[torch.Tensor, torch.Tensor, float]], num_classes: int) -> RegionMetrics:
    split = SplitMetrics(num_classes)
    for logits, mask, loss in batches:
        split.update(logits, mask, loss)
    return split.compute()


def test_absent_class_is_none_and_left_out_of_the_mean():
    # Pixel 4 is labelled -1: its prediction (1) counts nowhere. Class 2 is in neither predictions nor targets.
    got = metrics_of([(logits_for([[0, 0, 1, 1]], 3), masks([[0, 0, 1, -1]]), 0.5)], 3)
    assert got == RegionMetrics(
        miou=1.0, iou_per_class=(1.0, 1.0, None), accuracy=1.0, loss=0.5, n=1, classes_present=2
    )  # a plain mean over the 3 classes would give 2/3


def test_class_only_predicted_counts_with_iou_zero():
    # class 0: TP 1, union 2; class 1: TP 2, union 2; class 2: predicted once, never labelled → IoU 0.
    got = metrics_of([(logits_for([[0, 2, 1, 1]], 3), masks([[0, 0, 1, 1]]), 1.0)], 3)
    assert got.iou_per_class == (0.5, 1.0, 0.0)
    assert (got.miou, got.accuracy, got.classes_present) == (0.5, 0.75, 3)


def test_class_only_in_the_targets_counts_with_iou_zero():
    # class 0: TP 2, predicted 3, labelled 2 → 2/3; class 1: 1; class 2: labelled once, never predicted → 0.
    got = metrics_of([(logits_for([[0, 0, 0, 1]], 3), masks([[0, 2, 0, 1]]), 1.0)], 3)
    assert got.iou_per_class == pytest.approx((2 / 3, 1.0, 0.0))
    assert got.miou == pytest.approx(5 / 9) and got.classes_present == 3 and got.accuracy == 0.75


def test_counts_of_the_whole_split_not_a_mean_over_batches():
    # batch 1: class 0 TP 1 / union 2, class 1 TP 2 / union 3; batch 2 alone has class 2 (TP 1 / union 2) and
    # one class-0 pixel predicted as 2. Split: class 0 TP 1 / union 3, class 1 2/3, class 2 1/2.
    batches = [
        (logits_for([[0, 0, 1, 1]], 3), masks([[0, 1, 1, 1]]), 2.0),
        (logits_for([[2, 2]], 3), masks([[2, 0]]), 4.0),
    ]
    got = metrics_of(batches, 3)
    assert got.iou_per_class == pytest.approx((1 / 3, 2 / 3, 1 / 2))
    assert got.miou == pytest.approx(0.5) and got.accuracy == pytest.approx(4 / 6)
    assert (got.loss, got.n) == (3.0, 2)


def test_ignored_pixels_change_nothing():
    preds, labels = [[0, 1, 1, 0, 2, 2]], [[0, 1, 0, 0, 2, 1]]
    plain = metrics_of([(logits_for(preds, 3), masks(labels), 0.0)], 3)
    padded = metrics_of([(logits_for([[*preds[0], 2, 0, 1]], 3), masks([[*labels[0], -1, -1, -1]]), 0.0)], 3)
    assert padded == plain


def test_a_split_without_labelled_pixels_raises():
    with pytest.raises(ValueError, match="no labelled pixel"):
        metrics_of([(logits_for([[0, 1]], 2), masks([[-1, -1]]), 0.0)], 2)
    with pytest.raises(ValueError, match="no labelled pixel"):
        iou_from_counts([0.0, 0.0], [0.0, 0.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="no samples"):
        SplitMetrics(2).compute()


def test_labels_outside_the_classes_raise():
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.1 or be -1"):
        metrics_of([(logits_for([[0, 1]], 2), masks([[0, 2]]), 0.0)], 2)


def random_split(seed: int, batches: int = 7) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """Batches of varying size: predictions in {0, 1, 2}, labels in {0, 1, 3, -1}; class 4 appears nowhere."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(batches):
        size = (1 + b % 3, 6, 5)
        preds = torch.randint(0, 3, size, generator=g)
        labels = torch.tensor([0, 1, 3, -1])[torch.randint(0, 4, size, generator=g)]
        logits = logits_for(preds, K) + 0.1 * torch.rand((size[0], K, *size[1:]), generator=g)
        out.append((logits, labels, float(torch.rand((), generator=g))))
    return out


def torchmetrics_of(batches: list[tuple[torch.Tensor, torch.Tensor, float]]) -> tuple[float, list[float]]:
    macro = MulticlassJaccardIndex(K, ignore_index=-1, average="macro")
    per_class = MulticlassJaccardIndex(K, ignore_index=-1, average="none")
    for logits, labels, _ in batches:
        macro.update(logits.argmax(1), labels)
        per_class.update(logits.argmax(1), labels)
    return float(macro.compute()), per_class.compute().tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_torchmetrics_macro_jaccard_on_one_rank(seed):
    batches = random_split(seed)
    got = metrics_of(batches, K)
    macro, per_class = torchmetrics_of(batches)
    assert got.miou == pytest.approx(macro, rel=1e-6)  # torchmetrics divides in float32
    assert got.iou_per_class[4] is None and got.classes_present == 4
    assert got.iou_per_class[2] == 0.0 and got.iou_per_class[3] == 0.0  # only predicted / only labelled
    assert got.iou_per_class[:4] == pytest.approx(per_class[:4], rel=1e-6)
    assert got.n == sum(int(logits.shape[0]) for logits, _, _ in batches)


CHILD = textwrap.dedent(
    """
    import dataclasses, json, sys
    import torch
    import torch.distributed as dist
    from geopeft.train.metrics import SplitMetrics

    rank, store, data, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=2)
    split = SplitMetrics(int(sys.argv[5]))
    for logits, labels, loss in torch.load(data)[rank::3]:  # every third batch from the rank's own
        split.update(logits, labels, loss)
    result = split.compute()
    dist.destroy_process_group()
    with open(out, "w") as f:
        json.dump(dataclasses.asdict(result), f)
    """
)


@pytest.mark.distributed
def test_two_ranks_sharding_a_split_give_the_numbers_of_one_process(tmp_path: Path):
    batches = random_split(3, batches=6)
    # Rank r evaluates batches r and r+3 (rank 0: 2 samples, rank 1: 4); together batches 0, 1, 3, 4.
    whole = [batches[i] for i in (0, 1, 3, 4)]
    torch.save(batches, tmp_path / "batches.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(tmp_path / "store"), str(tmp_path / "batches.pt")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(r), *args, str(tmp_path / f"rank{r}.json"), str(K)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outs)[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # every rank reports the summed numbers
    one = dataclasses.asdict(metrics_of(whole, K))
    got = ranks[0]
    assert got["loss"] == pytest.approx(one.pop("loss"), rel=1e-12)  # float sums in another order
    del got["loss"]
    assert got == {**one, "iou_per_class": list(one["iou_per_class"])}  # counts are integers: exact
    macro, per_class = torchmetrics_of(whole)
    assert got["miou"] == pytest.approx(macro, rel=1e-6)
    assert got["iou_per_class"][:4] == pytest.approx(per_class[:4], rel=1e-6) and got["iou_per_class"][4] is None
