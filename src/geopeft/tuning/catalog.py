"""What a fine-tuning method trains in each backbone, as printed by ``geopeft models --peft METHOD``.

Each registered backbone is built with its default bands on the ``meta`` device (as
:mod:`geopeft.models.catalog` does), wrapped in a segmentor with an identity neck and decoder, and the
method is applied; the counts are the backbone's own, so they do not depend on a decoder. A backbone the
method does not apply to (LoRA or VPT on a ResNet) gets the method's reason instead of counts.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from geopeft.errors import ConfigError
from geopeft.models.catalog import CATALOG_IMG_SIZE
from geopeft.models.registry import backbone_names, get_backbone
from geopeft.models.segmentor import Segmentor
from geopeft.spec import TuningSpec
from geopeft.text import aligned
from geopeft.tuning.registry import ParamReport, apply_tuning, count_parameters, validate_tuning

__all__ = ["PeftRow", "backbone_report", "format_peft_table", "peft_table"]


class PeftRow(NamedTuple):
    """One backbone under one method.

    Args:
        backbone: registry name.
        report: the backbone's trainable and total parameters, ``None`` when the method does not apply.
        reason: why it does not apply (empty when it does).
    """

    backbone: str
    report: ParamReport | None
    reason: str


def backbone_report(name: str, spec: TuningSpec) -> ParamReport:
    """The backbone ``name``'s parameters under ``spec``, built on the ``meta`` device.

    Raises:
        ConfigError: the method does not apply to this backbone, or a bad option.
    """
    info = get_backbone(name)
    with torch.device("meta"):
        backbone = info.builder(bands=info.default_bands, img_size=CATALOG_IMG_SIZE)
        model = Segmentor(backbone, nn.Identity(), nn.Identity(), patch_size=info.patch_size)
        apply_tuning(model, spec)
    return count_parameters(model.backbone)


def peft_table(method: str) -> list[PeftRow]:
    """Every registered backbone under ``method`` with its default settings, in registration order.

    Raises:
        ConfigError: unknown method or option (checked before anything is built).
    """
    spec = TuningSpec(method)
    validate_tuning(spec, f"--peft {method}")
    rows: list[PeftRow] = []
    for name in backbone_names():
        try:
            rows.append(PeftRow(name, backbone_report(name, spec), ""))
        except ConfigError as exc:
            rows.append(PeftRow(name, None, str(exc)))
    return rows


def format_peft_table(method: str, rows: list[PeftRow] | None = None) -> str:
    """The table as aligned text: backbone, trainable, total, trainable %, or the reason it does not apply.

    Args:
        method: the method name (the header and, when ``rows`` is ``None``, the method to tabulate).
        rows: the rows to print; :func:`peft_table` of ``method`` when ``None``.
    """
    rows = peft_table(method) if rows is None else rows
    header = ("backbone", "trainable", "total", "%")
    cells = [header]
    notes: list[str] = []
    for row in rows:
        if row.report is None:
            cells.append((row.backbone, "n/a", "", ""))
            notes.append(f"{row.backbone}: {row.reason}")
        else:
            r = row.report
            cells.append((row.backbone, f"{r.trainable:,}", f"{r.total:,}", f"{100 * r.fraction:.2f}"))
    lines = [f"{method}: backbone parameters (the neck and decoder add their own, all trainable)"]
    lines += aligned(cells, right=range(1, len(header)))
    return "\n".join(lines + notes)
