"""The training engine: one protocol for every cell (AdamW, plateau schedule, early stopping, best checkpoint)."""
