"""Preference alignment: candidates, the (virtual) annotator, the DPO loss and the stage-2 trainer.

Public entry points: :func:`grade` (IoU -> grade 1..4) and :func:`dpo_loss` (the paper's loss).
They are imported on first use, so that commands which need neither do not pay for torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["dpo_loss", "grade"]


def __getattr__(name: str) -> Any:
    if name == "grade":
        from samdpo.align.annotator import grade

        return grade
    if name == "dpo_loss":
        from samdpo.align.dpo import dpo_loss

        return dpo_loss
    raise AttributeError(f"module 'samdpo.align' has no attribute {name!r}")
