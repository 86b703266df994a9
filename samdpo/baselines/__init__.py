"""Baselines of the paper's tables trained outside the SAM pipeline (the 20%-labelled U-Net)."""
