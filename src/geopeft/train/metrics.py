"""Segmentation metrics on a whole split: mIoU as TerraTorch reports it, per-class IoU, pixel accuracy, mean loss.

mIoU is torchmetrics' ``MulticlassJaccardIndex(average="macro", ignore_index=-1)`` over the whole split, which
TerraTorch reports as the study's "test mIoU": per class, IoU = TP / (TP + FP + FN) from the split's confusion counts;
then the unweighted mean over the classes *present*, i.e. found in the targets or the predictions of the split. A class
absent from both has no IoU (``None``) and is left out of the mean, where a plain mean over all classes would count it
as 0. Pixels labelled -1 are removed before anything is counted.

Each rank counts its shard; :meth:`SplitMetrics.compute` sums the counts over every rank before any division, so a
split sharded over ranks gives the numbers of one process.
"""

from __future__ import annotations

import torch

from geopeft.result import RegionMetrics
from geopeft.train.distributed import all_reduce_sum


def iou_from_counts(
    tp: list[float], predicted: list[float], target: list[float]
) -> tuple[float, tuple[float | None, ...], int]:
    """Macro mIoU over the classes present, per-class IoU (``None`` where absent) and the number present.

    Args:
        tp: per class, pixels predicted as the class whose label is the class.
        predicted: per class, labelled pixels predicted as the class.
        target: per class, pixels labelled as the class.

    Raises:
        ValueError: no class is present (the split has no labelled pixel).
    """
    per_class: list[float | None] = []
    for t, p, g in zip(tp, predicted, target, strict=True):
        union = p + g - t
        per_class.append(t / union if union > 0 else None)
    present = [v for v in per_class if v is not None]
    if not present:
        raise ValueError("the split has no labelled pixel (every label is the ignore index)")
    return sum(present) / len(present), tuple(per_class), len(present)


class SplitMetrics:
    """Accumulates the confusion counts of one split, then reports :class:`RegionMetrics`.

    Args:
        num_classes: classes of the dataset.
        ignore_index: the label no metric counts.
        device: where the counts live (the model's device: no transfer per batch).
    """

    def __init__(self, num_classes: int, ignore_index: int = -1, device: torch.device | None = None) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        device = device or torch.device("cpu")
        self.tp = torch.zeros(num_classes, dtype=torch.int64, device=device)
        self.predicted = torch.zeros_like(self.tp)
        self.target = torch.zeros_like(self.tp)
        self.loss_sum = 0.0
        self.n = 0

    def update(self, logits: torch.Tensor, mask: torch.Tensor, loss_sum: float) -> None:
        """Add a batch: logits [B,K,H,W], mask [B,H,W], and the batch's summed per-sample loss."""
        k = self.num_classes
        preds = logits.detach().argmax(1).to(self.tp.device)
        mask = mask.to(self.tp.device)
        labelled = mask != self.ignore_index
        preds, mask = preds[labelled], mask[labelled].long()
        if bool(((mask < 0) | (mask >= k)).any()):
            raise ValueError(f"labels must lie in 0..{k - 1} or be {self.ignore_index}")
        self.tp += torch.bincount(preds[preds == mask], minlength=k)
        self.predicted += torch.bincount(preds, minlength=k)
        self.target += torch.bincount(mask, minlength=k)
        self.loss_sum += loss_sum
        self.n += int(logits.shape[0])

    def compute(self) -> RegionMetrics:
        """Metrics over everything added so far on every rank (fractions in [0, 1])."""
        k = self.num_classes
        counts = [float(v) for v in torch.cat([self.tp, self.predicted, self.target]).cpu()]
        summed = all_reduce_sum([*counts, self.loss_sum, float(self.n)])
        tp, predicted, target = summed[:k], summed[k : 2 * k], summed[2 * k : 3 * k]
        loss_sum, n = summed[3 * k], summed[3 * k + 1]
        if n == 0:
            raise ValueError("no samples were evaluated")
        miou, per_class, present = iou_from_counts(tp, predicted, target)
        return RegionMetrics(
            miou=miou,
            iou_per_class=per_class,
            accuracy=sum(tp) / sum(target),
            loss=loss_sum / n,
            n=int(n),
            classes_present=present,
        )
