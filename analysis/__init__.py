"""Result files -> tidy pandas table -> paper-shaped tables (``geopeft tables``).

This package reads JSON files only. It never imports torch or the heavy parts of geopeft (models,
training): only :mod:`geopeft.result`, :mod:`geopeft.io`, :mod:`geopeft.paths` and
:mod:`geopeft.errors`, so tables can be made on a login node or a laptop.

* :mod:`analysis.collect`: ``collect`` (sweep -> tidy table) and ``write_tidy``.
* :mod:`analysis.stats`: ``summarize`` (mean, std and n over seeds).
* :mod:`analysis.tables`: ``latex_table`` (booktabs, best bold, second underlined) and ``write_tables``.
"""

from __future__ import annotations

from analysis.collect import collect, write_tidy
from analysis.stats import summarize
from analysis.tables import latex_table, write_tables

__all__ = ["collect", "latex_table", "summarize", "write_tables", "write_tidy"]
