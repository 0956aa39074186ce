"""Segmentation metrics on a whole split: macro mIoU, per-class IoU, pixel accuracy, mean loss.

IoU is accumulated over the whole split before the class mean is taken (TerraTorch's
``MulticlassJaccardIndex`` with ``average="macro"``), and label -1 is ignored everywhere. Under a process group,
:meth:`SplitMetrics.compute` sums every rank's counts (torchmetrics syncs its confusion counts on the metrics'
device; loss and sample count are all-reduced), so a split sharded over ranks gives the counts of one process.
"""

from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from geopeft.result import RegionMetrics
from geopeft.train.distributed import all_reduce_sum


class SplitMetrics:
    """Accumulates predictions of one split, then reports :class:`RegionMetrics`."""

    def __init__(self, num_classes: int, ignore_index: int = -1, device: torch.device | None = None) -> None:
        device = device or torch.device("cpu")
        jaccard = MulticlassJaccardIndex(num_classes=num_classes, ignore_index=ignore_index, average="none")
        accuracy = MulticlassAccuracy(num_classes=num_classes, ignore_index=ignore_index, average="micro")
        self.jaccard, self.accuracy = jaccard.to(device), accuracy.to(device)
        self.device = device
        self.loss_sum = 0.0
        self.n = 0

    def update(self, logits: torch.Tensor, mask: torch.Tensor, loss_sum: float) -> None:
        """Add a batch: logits [B,K,H,W], mask [B,H,W], and the batch's summed per-sample loss."""
        logits = logits.detach().float().to(self.device)
        mask = mask.to(self.device)
        self.jaccard.update(logits, mask)
        self.accuracy.update(logits, mask)
        self.loss_sum += loss_sum
        self.n += int(mask.shape[0])

    def compute(self) -> RegionMetrics:
        """Metrics over everything added so far (fractions in [0, 1])."""
        loss_sum, n = all_reduce_sum([self.loss_sum, float(self.n)])
        if n == 0:
            raise ValueError("no samples were evaluated")
        per_class = self.jaccard.compute().cpu()
        return RegionMetrics(
            miou=float(per_class.mean()),
            iou_per_class=tuple(float(v) for v in per_class),
            accuracy=float(self.accuracy.compute()),
            loss=loss_sum / n,
            n=int(n),
        )
