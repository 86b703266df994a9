"""nnU-Net's trainer with a short schedule (imports nnunetv2: loaded only by :mod:`samdpo.baselines.nnunet`).

nnU-Net's ``nnUNetTrainer`` trains 1000 epochs of 250 iterations, which a GPU does in a day and a CPU
in weeks. This subclass changes nothing but the number of epochs and of iterations per epoch (network,
loss, augmentation, optimiser and its polynomial learning-rate decay over the epochs are nnU-Net's), like
nnunetv2's own ``nnUNetTrainer_Xepochs`` variants, with the counts as settings, and may end training
early: after ``patience`` epochs without a new best EMA pseudo Dice on its validation cases (nnU-Net's own
``checkpoint_best.pth`` criterion) or once its process has used ``budget_s`` CPU seconds. Its class name names the
trainer folder (``nnUNetTrainerShortSchedule__nnUNetPlans__2d``), so a short run is never mistaken for
nnU-Net's default one.
"""

from __future__ import annotations

import time

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class TrainingEnded(Exception):
    """Raised at an epoch's end when the patience or the budget is spent (the caller finishes the training)."""


class nnUNetTrainerShortSchedule(nnUNetTrainer):  # noqa: N801  (nnU-Net's trainer naming)
    """``nnUNetTrainer`` whose schedule :meth:`set_schedule` sets before training starts."""

    patience: int | None = None
    budget_s: float | None = None
    stopped = "schedule"

    def set_schedule(
        self,
        epochs: int,
        iterations_per_epoch: int,
        val_iterations_per_epoch: int,
        patience: int | None = None,
        budget_s: float | None = None,
    ) -> None:
        """Train ``epochs`` epochs of ``iterations_per_epoch`` batches, with ``val_iterations_per_epoch``
        pseudo-Dice batches each (the learning rate decays to 0 over ``epochs``: the optimiser is made later,
        when training starts); end early after ``patience`` epochs without a new best EMA pseudo Dice or once
        the process has used ``budget_s`` CPU seconds since (None: never)."""
        self.num_epochs = epochs
        self.num_iterations_per_epoch = iterations_per_epoch
        self.num_val_iterations_per_epoch = val_iterations_per_epoch
        self.patience, self.budget_s = patience, budget_s
        self._began, self._best_epoch = time.process_time(), 0
        self.print_to_log_file(
            f"samdpo short schedule: {epochs} epochs x {iterations_per_epoch} iterations "
            f"({val_iterations_per_epoch} validation iterations), patience {patience}, budget {budget_s} s"
        )

    def on_epoch_end(self) -> None:
        """nnU-Net's epoch end (logs, ``checkpoint_best.pth``), then :class:`TrainingEnded` when patience or
        budget is spent."""
        best = self._best_ema
        super().on_epoch_end()
        if self._best_ema != best:
            self._best_epoch = self.current_epoch  # counted from 1 after nnU-Net's increment
        if self.patience is not None and self.current_epoch - self._best_epoch >= self.patience:
            self.stopped = "patience"
        elif self.budget_s is not None and time.process_time() - self._began >= self.budget_s:
            self.stopped = "budget"
        if self.stopped != "schedule" and self.current_epoch < self.num_epochs:
            self.print_to_log_file(f"samdpo: training ends after epoch {self.current_epoch} ({self.stopped})")
            raise TrainingEnded(self.stopped)
