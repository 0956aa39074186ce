"""The backbone table of ``geopeft models``: every backbone, counted on the meta device."""

from __future__ import annotations

import torch

from geopeft.models.catalog import backbone_table, format_backbone_table
from geopeft.models.registry import backbone_names, get_backbone


def test_every_backbone_has_a_positive_count():
    rows = backbone_table()
    assert [r.name for r in rows] == backbone_names()
    for row in rows:
        info = get_backbone(row.name)
        assert isinstance(row.params, int) and row.params > 0, row.name
        assert (row.embed_dim, row.depth, row.patch_size, row.bands) == (
            info.embed_dim,
            info.depth,
            info.patch_size,
            len(info.default_bands),
        )
        assert isinstance(row, tuple) and row[:2] == (row.name, row.params)


def test_known_counts():
    counts = {r.name: r.params for r in backbone_table()}
    assert counts["prithvi_eo_v1_100"] == 86_237_184
    assert counts["prithvi_eo_v2_100_tl"] == 86_237_186
    assert counts["prithvi_eo_v2_300"] == 303_886_336
    assert counts["prithvi_eo_v2_300_tl"] == counts["prithvi_eo_v2_300"] + 2
    assert counts["prithvi_eo_v2_600_tl"] == counts["prithvi_eo_v2_600"] + 2


def test_meta_builds_hold_no_real_storage():
    for name in backbone_names():
        info = get_backbone(name)
        with torch.device("meta"):
            model = info.builder(bands=info.default_bands, img_size=224)
        assert all(t.device.type == "meta" for t in (*model.parameters(), *model.buffers())), name


def test_format():
    text = format_backbone_table()
    lines = text.splitlines()
    assert lines[0].split() == ["backbone", "params", "width", "depth", "patch", "bands"]
    assert len(lines) == 1 + len(backbone_names())
    assert any(line.split()[:2] == ["prithvi_eo_v1_100", "86,237,184"] for line in lines)
