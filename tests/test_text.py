"""The one plain-text table helper behind every aligned listing."""

from geopeft.text import aligned


def test_columns_align_left_or_right_without_trailing_spaces():
    rows = [("backbone", "params", "note"), ("vit_b16", "86,388,480", ""), ("resnet_tiny", "170,336", "cnn")]
    assert aligned(rows, right={1}) == [
        "backbone         params  note",
        "vit_b16      86,388,480",
        "resnet_tiny     170,336  cnn",
    ]
    assert aligned([]) == []
