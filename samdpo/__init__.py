"""samdpo: semi-supervised medical image segmentation with SAM, unsupervised prompts and DPO."""

from __future__ import annotations

__version__ = "0.1.0"
