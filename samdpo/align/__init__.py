"""Preference alignment: candidates, the (virtual) annotator, the DPO loss and the stage-2 trainer.

Public entry points: :func:`grade` (IoU -> grade 1..4) and :func:`dpo_loss` (the paper's loss).
"""

from samdpo.align.annotator import grade
from samdpo.align.dpo import dpo_loss

__all__ = ["dpo_loss", "grade"]
