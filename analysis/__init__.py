"""Result files -> tidy pandas table -> the paper's tables, LaTeX, figures and a PDF report.

This package reads JSON files only. It never imports torch or the heavy parts of geopeft (models,
training): only :mod:`geopeft.result`, :mod:`geopeft.io`, :mod:`geopeft.paths` and
:mod:`geopeft.errors`, so tables can be made on a login node or a laptop; matplotlib is imported only
when a figure is drawn.

* :mod:`analysis.collect`: ``collect`` (sweep -> tidy table, every spec field) and ``write_tidy``.
* :mod:`analysis.labels`: the one map from spec names to the paper's labels.
* :mod:`analysis.stats`: ``summarize`` (mean, std and n over seeds); :mod:`analysis.robust`: average
  rank, IQM with stratified-bootstrap CIs, delta to full fine-tuning.
* :mod:`analysis.paper`: ``peft_table``, ``ood_table``, ``epoch_and_time`` in the released layout;
  :mod:`analysis.compare`: ours against the released numbers; :mod:`analysis.ablations`: decoder,
  metadata, memory and time tables.
* :mod:`analysis.latex`: booktabs rendering (best bold, second underlined); :mod:`analysis.tables` and
  :mod:`analysis.writers`: ``geopeft tables``; :mod:`analysis.plots`: figures; :mod:`analysis.report`:
  ``geopeft report``.
"""

from __future__ import annotations

from analysis.collect import collect, write_tidy
from analysis.stats import summarize
from analysis.tables import latex_table, write_all, write_tables

__all__ = ["collect", "latex_table", "summarize", "write_all", "write_tables", "write_tidy"]
